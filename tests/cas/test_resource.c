/* test_resource.c - ByteStream resource-name grammar. */
#include <criterion/criterion.h>
#include <string.h>

#include "cas/cas.h"

#define H "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static int parse(const char *s, bool write, cas_resource_t *r)
{
	return cas_resource_parse(s, strlen(s), write, r, NULL);
}

Test(resource, reads)
{
	cas_resource_t r;
	cr_assert_eq(parse("blobs/" H "/0", false, &r), 0);
	cr_assert_eq(r.instance_len, 0);
	cr_assert_not(r.compressed);
	cr_assert_eq(parse("a/b/blobs/" H "/123", false, &r), 0);
	cr_assert_eq(r.instance_len, 3);
	cr_assert_eq(memcmp(r.instance, "a/b", 3), 0);
	cr_assert_eq(r.digest.size, 123);
	cr_assert_eq(parse("x/compressed-blobs/zstd/" H "/5", false, &r), 0);
	cr_assert(r.compressed);
	cr_assert_eq(parse("blobs/sha256/" H "/5", false, &r), 0);
	cr_assert_eq(parse("compressed-blobs/zstd/sha256/" H "/5", false, &r), 0);
}

Test(resource, writes)
{
	cas_resource_t r;
	cr_assert_eq(parse("uploads/6d1f-aa/blobs/" H "/7", true, &r), 0);
	cr_assert(r.write);
	cr_assert_eq(r.digest.size, 7);
	cr_assert_eq(parse("inst/uploads/u/blobs/" H "/7/some/metadata", true, &r), 0);
	cr_assert_eq(r.instance_len, 4);
	cr_assert_eq(parse("uploads/u/compressed-blobs/zstd/" H "/7", true, &r), 0);
	cr_assert(r.compressed);
}

Test(resource, refused)
{
	cas_resource_t r;
	const char *reads[] = {"", "/", "blobs/", "blobs/" H, "blobs/" H "/", "blobs/" H "/1/2",
			       "blobs/" H "/+1", "blobs/" H "/-1", "blobs/" H "/99999999999999999999",
			       "a//blobs/" H "/1", "uploads/u/blobs/" H "/1", "compressed-blobs/zstd",
			       "blobs/sha1/" H "/1", "blobs/" H "A/1"};
	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++)
		cr_assert_neq(parse(reads[i], false, &r), 0, "%s", reads[i]);
	const char *writes[] = {"blobs/" H "/1", "uploads/blobs/" H "/1", "uploads/u/" H "/1",
				"uploads/u u/blobs/" H "/1", "uploads/u/blobs/" H};
	for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++)
		cr_assert_neq(parse(writes[i], true, &r), 0, "%s", writes[i]);
	cr_assert_eq(parse("compressed-blobs/deflate/" H "/1", false, &r), REAP_E_UNIMPLEMENTED);
	char nul[] = "blobs/" H "/1";
	nul[3] = '\0';
	cr_assert_neq(cas_resource_parse(nul, sizeof(nul) - 1, false, &r, NULL), 0);
}
