/* Store-heavy integer loop: every iteration loads and stores a 256 KiB table (the case that made
 * unicorn's default TLB slow, see shared/UNICORN-NOTES.md). Prints a checksum so that both
 * emulators can be checked to compute the same thing. Argument: rounds over the table. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define N (1u << 16)
static uint32_t table[N];

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 300;
    uint32_t x = 12345;
    for (long r = 0; r < rounds; r++) {
        for (uint32_t i = 0; i < N; i++) {
            x = x * 1103515245u + 12345u;
            table[i] = x ^ (table[(i * 7u) & (N - 1)] >> 3);
            table[(i + 11u) & (N - 1)] += i;
        }
    }
    uint64_t sum = 0;
    for (uint32_t i = 0; i < N; i++) sum += (uint64_t)table[i] * (i | 1);
    printf("%llu\n", (unsigned long long)sum);
    return 0;
}
