/* fuzz_resource.c - ByteStream resource names (read and write grammars) and instance names. */
#include <stdint.h>
#include <string.h>

#include "cas/cas.h"
#include "common/instance.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cas_resource_t r;
	reap_errbuf_t eb;
	const char *s = (const char *)data;
	for (int w = 0; w < 2; w++) {
		if (cas_resource_parse(s, size, w == 1, &r, &eb) == REAP_OK) {
			/* what the parser accepts must be self-consistent */
			if (r.instance_len > size || r.digest.size < 0 ||
			    reap_instance_check(r.instance, r.instance_len, NULL) != REAP_OK)
				__builtin_trap();
		}
	}
	(void)reap_instance_check(s, size, &eb);
	return 0;
}
