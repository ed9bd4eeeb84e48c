/*
 * driver.c - a stand-in for libFuzzer when the compiler has none: replays
 * every file of the corpus folders given, then feeds -runs=N inputs made by
 * mutating them (byte flips, inserts, deletes, splices) with a fixed seed,
 * so a run is repeatable. Sanitizers catch what the parser does wrong.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT 4096
#define MAX_SEEDS 256

static uint8_t *seeds[MAX_SEEDS];
static size_t seed_len[MAX_SEEDS], n_seeds;

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void load_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[1024];
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL && n_seeds < MAX_SEEDS) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		FILE *f = fopen(path, "rb");
		if (f == NULL)
			continue;
		uint8_t *buf = malloc(FUZZ_MAX_INPUT);
		size_t n = buf ? fread(buf, 1, FUZZ_MAX_INPUT, f) : 0;
		fclose(f);
		if (buf == NULL)
			continue;
		seeds[n_seeds] = buf;
		seed_len[n_seeds++] = n;
		LLVMFuzzerTestOneInput(buf, n);
	}
	closedir(d);
}

int main(int argc, char **argv)
{
	long runs = 0;
	uint8_t *buf = malloc(FUZZ_MAX_INPUT);
	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "-runs=", 6) == 0)
			runs = atol(argv[i] + 6);
		else
			load_dir(argv[i]);
	}
	for (long r = 0; r < runs && n_seeds > 0 && buf != NULL; r++) {
		size_t k = next_rand() % n_seeds, n = seed_len[k];
		memcpy(buf, seeds[k], n);
		int edits = 1 + (int)(next_rand() % 8);
		for (int e = 0; e < edits; e++) {
			size_t pos = n ? next_rand() % n : 0;
			switch (next_rand() % 5) {
			case 0: if (n) buf[pos] ^= (uint8_t)(1u << (next_rand() % 8)); break;
			case 1: if (n) buf[pos] = (uint8_t)next_rand(); break;
			case 2: if (n < FUZZ_MAX_INPUT) { memmove(buf + pos + 1, buf + pos, n - pos); buf[pos] = (uint8_t)next_rand(); n++; } break;
			case 3: if (n) { memmove(buf + pos, buf + pos + 1, n - pos - 1); n--; } break;
			default: {
				size_t o = next_rand() % n_seeds, m = seed_len[o];
				size_t take = m ? next_rand() % m : 0;
				if (pos + take <= FUZZ_MAX_INPUT) { memcpy(buf + pos, seeds[o], take); if (pos + take > n) n = pos + take; }
				break;
			}
			}
		}
		LLVMFuzzerTestOneInput(buf, n);
	}
	printf("fuzz driver: %zu seeds, %ld mutated runs, no crash\n", n_seeds, runs);
	for (size_t i = 0; i < n_seeds; i++)
		free(seeds[i]);
	free(buf);
	return 0;
}
