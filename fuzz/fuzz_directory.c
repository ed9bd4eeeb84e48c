/* fuzz_directory.c - Directory and ActionResult messages as GetTree and the AC decode them. */
#include <stdint.h>

#include "cas/cas_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	reap_errbuf_t eb;
	RE(Directory) *d = RE_FN(directory__unpack)(NULL, size, data);
	if (d != NULL) {
		(void)cas_directory_check(d, &eb);
		RE_FN(directory__free_unpacked)(d, NULL);
	}
	RE(ActionResult) *ar = RE_FN(action_result__unpack)(NULL, size, data);
	if (ar != NULL)
		RE_FN(action_result__free_unpacked)(ar, NULL);
	return 0;
}
