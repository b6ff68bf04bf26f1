/* rng.c — counter-based random numbers: u = f(seed, tensor, expert, element), so a mask
 * never depends on thread count or chunking (DARE, methods.md). */
#include "internal.h"

/* splitmix64's finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer. */
uint64_t acem_mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

uint64_t acem_fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t acem_rng_key(uint64_t seed, uint64_t name_hash, uint64_t t) {
    return acem_mix64(acem_mix64(acem_mix64(seed) ^ name_hash) ^ t);
}
