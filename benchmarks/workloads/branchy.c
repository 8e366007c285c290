/* Branchy, call-heavy integer work: a recursive evaluator over a small expression tree, calls
 * through a table of function pointers, and a switch-driven state machine. The counterpart of
 * compute.c (store-heavy): here the cost is in taken branches, returns and indirect calls, the
 * part of a translated program where block chaining and the return-address path matter.
 * Prints a checksum so both emulators can be checked to compute the same thing.
 * Argument: rounds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef uint64_t (*op_fn)(uint64_t, uint64_t);

static uint64_t op_add(uint64_t a, uint64_t b) { return a + b; }
static uint64_t op_xor(uint64_t a, uint64_t b) { return a ^ (b << 1); }
static uint64_t op_mul(uint64_t a, uint64_t b) { return a * (b | 1); }
static uint64_t op_rot(uint64_t a, uint64_t b) { return (a << (b & 31)) | (a >> (64 - (b & 31) - 1)); }
static op_fn ops[4] = {op_add, op_xor, op_mul, op_rot};

/* Not inlined: the point is the call and return. */
__attribute__((noinline)) static uint64_t eval(uint64_t seed, int depth) {
    if (depth == 0) return seed * 2654435761u;
    uint64_t left = eval(seed + 1, depth - 1);
    uint64_t right = eval(seed ^ left, depth - 2 > 0 ? depth - 2 : 0);
    return ops[(seed >> 3) & 3](left, right);
}

__attribute__((noinline)) static uint64_t machine(uint64_t x, int steps) {
    int state = 0;
    for (int i = 0; i < steps; i++) {
        switch (state) {
        case 0: x += 7; state = (x & 1) ? 3 : 1; break;
        case 1: x ^= x >> 5; state = (x & 2) ? 2 : 4; break;
        case 2: x *= 3; state = (x & 4) ? 0 : 5; break;
        case 3: x -= i; state = (x & 8) ? 4 : 2; break;
        case 4: x = (x << 3) | (x >> 61); state = (x & 16) ? 5 : 0; break;
        default: x += x >> 7; state = (int)(x % 5); break;
        }
    }
    return x;
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 100;
    uint64_t sum = 0;
    for (long r = 0; r < rounds; r++) {
        sum += eval((uint64_t)r, 14);
        sum ^= machine(sum, 20000);
    }
    printf("%llu\n", (unsigned long long)sum);
    return 0;
}
