/* test_common.c - digests, instance names, sizes and config files. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/digest.h"
#include "common/instance.h"

static const char empty_hex[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

Test(digest, parse_and_format)
{
	reap_digest_t d, e;
	char hex[65];
	cr_assert_eq(reap_digest_parse(empty_hex, 64, 0, &d, NULL), 0);
	cr_assert(reap_digest_is_empty(&d));
	reap_digest_hex(&d, hex);
	cr_assert_str_eq(hex, empty_hex);
	reap_digest_empty(&e);
	cr_assert(reap_digest_eq(&d, &e));
	cr_assert_eq(reap_digest_of("", 0, &e), 0);
	cr_assert(reap_digest_eq(&d, &e));
}

Test(digest, strict)
{
	reap_errbuf_t eb = {{0}};
	reap_digest_t d;
	char upper[65];
	strcpy(upper, empty_hex);
	upper[0] = 'E';
	cr_assert_eq(reap_digest_parse(upper, 64, 0, &d, &eb), REAP_E_INVALID);
	cr_assert(strstr(eb.msg, "hex") != NULL);
	cr_assert_eq(reap_digest_parse(empty_hex, 63, 0, &d, NULL), REAP_E_INVALID);
	cr_assert_eq(reap_digest_parse(empty_hex, 64, -1, &d, NULL), REAP_E_INVALID);
	cr_assert_eq(reap_digest_parse(NULL, 0, 0, &d, NULL), REAP_E_INVALID);
	/* every position, every kind of non-digit, is caught and named */
	static const char bad[] = {'g', 'G', 'F', '/', ':', '`', '\0', (char)0xff, (char)0x80};
	for (size_t at = 0; at < 64; at += 9) {
		for (size_t k = 0; k < sizeof(bad); k++) {
			char buf[65], want[32];
			strcpy(buf, empty_hex);
			buf[at] = bad[k];
			cr_assert_eq(reap_digest_parse(buf, 64, 0, &d, &eb), REAP_E_INVALID,
				     "byte 0x%02x at %zu", (unsigned char)bad[k], at);
			snprintf(want, sizeof(want), "at %zu", at);
			cr_assert(strstr(eb.msg, want) != NULL, "%s", eb.msg);
		}
	}
	cr_assert_eq(reap_digest_parse("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
				       64, 5, &d, NULL), 0);
	cr_assert_eq(d.hash[0], 0x01);
	cr_assert_eq(d.hash[7], 0xef);
	cr_assert_eq(d.size, 5);
}

Test(digest, key_roundtrip_and_streaming)
{
	reap_digest_t a, b, c;
	uint8_t key[REAP_DIGEST_KEY_LEN];
	reap_hasher_t h = {0};
	cr_assert_eq(reap_digest_of("hello world", 11, &a), 0);
	reap_digest_key(&a, key);
	reap_digest_from_key(key, &b);
	cr_assert(reap_digest_eq(&a, &b));
	cr_assert_eq(reap_hasher_init(&h), 0);
	reap_hasher_update(&h, "hello ", 6);
	reap_hasher_update(&h, "world", 5);
	reap_hasher_final(&h, &c);
	reap_hasher_destroy(&h);
	cr_assert(reap_digest_eq(&a, &c));
	cr_assert_eq(c.size, 11);
}

Test(instance, names)
{
	cr_assert_eq(reap_instance_check("", 0, NULL), 0);
	cr_assert_eq(reap_instance_check("main", 4, NULL), 0);
	cr_assert_eq(reap_instance_check("team/ci", 7, NULL), 0);
	const char *bad[] = {"a//b", "/a", "a/", "blobs", "x/uploads", "a/../b", ".", "x/compressed-blobs",
			     "operations", "a\nb"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(reap_instance_check(bad[i], strlen(bad[i]), NULL), REAP_E_INVALID, "%s", bad[i]);
	char longname[300];
	memset(longname, 'a', sizeof(longname));
	cr_assert_eq(reap_instance_check(longname, sizeof(longname), NULL), REAP_E_INVALID);
}

Test(instance, sets)
{
	const char *pats[] = {"", "main", "team/*"};
	reap_instances_t *s = reap_instances_new(pats, 3, NULL);
	cr_assert_not_null(s);
	cr_assert_eq(reap_instances_check(s, "", 0, NULL), 0);
	cr_assert_eq(reap_instances_check(s, "main", 4, NULL), 0);
	cr_assert_eq(reap_instances_check(s, "team", 4, NULL), 0);
	cr_assert_eq(reap_instances_check(s, "team/x/y", 8, NULL), 0);
	cr_assert_eq(reap_instances_check(s, "teamx", 5, NULL), REAP_E_INVALID);
	cr_assert_eq(reap_instances_check(s, "mainly", 6, NULL), REAP_E_INVALID);
	reap_instances_free(s);
	const char *badpat[] = {"a//b"};
	cr_assert_null(reap_instances_new(badpat, 1, NULL));
}

Test(config, sizes)
{
	uint64_t v;
	cr_assert_eq(reap_parse_size("4096", &v), 0);
	cr_assert_eq(v, 4096);
	cr_assert_eq(reap_parse_size("8MiB", &v), 0);
	cr_assert_eq(v, 8u << 20);
	cr_assert_eq(reap_parse_size("10GB", &v), 0);
	cr_assert_eq(v, 10000000000ull);
	cr_assert_eq(reap_parse_size("1.5G", &v), REAP_E_INVALID);
	cr_assert_eq(reap_parse_size("-1", &v), REAP_E_INVALID);
	cr_assert_eq(reap_parse_size("99999999999999T", &v), REAP_E_INVALID);
}

static char *write_tmp(const char *text)
{
	static char path[64];
	strcpy(path, "/tmp/reap-cfg-XXXXXX");
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

Test(config, keys_and_errors)
{
	reap_errbuf_t eb = {{0}};
	char *p = write_tmp("{\"listen\": \"127.0.0.1:1\", \"capacity\": \"1GiB\", \"threads\": 3,\n"
			    " \"instances\": [\"a\", \"b\"]}");
	reap_config_t *c = reap_config_load(p, &eb);
	cr_assert_not_null(c, "%s", eb.msg);
	const char *listen = NULL, **inst = NULL;
	uint64_t cap = 0;
	int64_t threads = 0;
	size_t n = 0;
	cr_assert_eq(reap_config_string(c, "listen", &listen, &eb), 0);
	cr_assert_eq(reap_config_size(c, "capacity", &cap, &eb), 0);
	cr_assert_eq(reap_config_int(c, "threads", 0, 8, &threads, &eb), 0);
	cr_assert_eq(reap_config_strings(c, "instances", &inst, &n, &eb), 0);
	cr_assert_str_eq(listen, "127.0.0.1:1");
	cr_assert_eq(cap, 1ull << 30);
	cr_assert_eq(threads, 3);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(inst[1], "b");
	free(inst);
	cr_assert_eq(reap_config_check_unknown(c, &eb), 0);
	reap_config_free(c);
	unlink(p);

	p = write_tmp("{\"listen\": 5, \"typo_key\": 1}");
	c = reap_config_load(p, &eb);
	cr_assert_eq(reap_config_string(c, "listen", &listen, &eb), REAP_E_INVALID);
	cr_assert(strstr(eb.msg, "\"listen\"") != NULL, "%s", eb.msg);
	cr_assert_eq(reap_config_check_unknown(c, &eb), REAP_E_INVALID);
	cr_assert(strstr(eb.msg, "typo_key") != NULL, "%s", eb.msg);
	reap_config_free(c);
	unlink(p);

	/* value errors and unknown keys name the line of the key too */
	p = write_tmp("{\n  \"data\": \"d\",\n  \"threads\": 999,\n  \"typo\" : 1\n}");
	c = reap_config_load(p, &eb);
	cr_assert_not_null(c, "%s", eb.msg);
	cr_assert_eq(reap_config_int(c, "threads", 0, 8, &threads, &eb), REAP_E_INVALID);
	cr_assert(strstr(eb.msg, ":3: key \"threads\"") != NULL, "%s", eb.msg);
	cr_assert_eq(reap_config_string(c, "data", &listen, &eb), 0);
	cr_assert_eq(reap_config_check_unknown(c, &eb), REAP_E_INVALID);
	cr_assert(strstr(eb.msg, ":4: unknown key \"typo\"") != NULL, "%s", eb.msg);
	reap_config_free(c);
	unlink(p);

	p = write_tmp("{\n\"listen\": \"x\",\n oops }");
	cr_assert_null(reap_config_load(p, &eb));
	cr_assert(strstr(eb.msg, ":3:") != NULL, "names the line: %s", eb.msg);
	unlink(p);
}
