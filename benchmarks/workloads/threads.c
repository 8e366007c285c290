/* Threads working together: 8 threads pass a token around a ring (mutex + condition variable
 * ping-pong, so every hand-over is a futex wake and a wait), while bumping a shared C11 atomic
 * counter and a mutex-protected total. Prints the totals so both emulators can be checked to
 * agree. Arguments: hand-overs per thread (default 2000), threads (default 8, at most 64). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_THREADS 64

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_changed = PTHREAD_COND_INITIALIZER;
static int turn;            /* whose turn it is, under lock */
static long total;          /* under lock */
static atomic_long counter; /* lock-free */
static int nthreads;
static long rounds;

static void *worker(void *arg) {
    int me = (int)(long)arg;
    for (long r = 0; r < rounds; r++) {
        pthread_mutex_lock(&lock);
        while (turn != me) pthread_cond_wait(&turn_changed, &lock);
        total += me + r;
        turn = (me + 1) % nthreads;
        pthread_cond_broadcast(&turn_changed);
        pthread_mutex_unlock(&lock);
        for (int i = 0; i < 16; i++) atomic_fetch_add(&counter, i);
    }
    return NULL;
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atol(argv[1]) : 2000;
    nthreads = argc > 2 ? atoi(argv[2]) : 8;
    if (nthreads < 1 || nthreads > MAX_THREADS) return 2;
    pthread_t threads[MAX_THREADS];
    for (long i = 0; i < nthreads; i++) pthread_create(&threads[i], NULL, worker, (void *)i);
    for (int i = 0; i < nthreads; i++) pthread_join(threads[i], NULL);
    printf("threads=%d total=%ld counter=%ld\n", nthreads, total, atomic_load(&counter));
    return 0;
}
