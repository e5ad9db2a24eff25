/*
 * A STAND-IN for libkrun, for tests only (package kruntest builds it): libkrun cannot
 * run on the test machines (no KVM). It has libkrun's entry points with
 * libkrun's C signatures (libkrun.h), runs no VM, and appends one line per
 * call, with every argument, to the file named by $KRUN_STANDIN_LOG.
 * krun_start_enter then exits the process with status 42, as libkrun exits
 * with the workload's status, so a caller that got that far never returns.
 *
 * Failures to provoke: krun_set_root fails with -ENOENT for the root
 * "/standin/fail". Built without -DWITH_VIRTIOFS3, it lacks
 * krun_add_virtiofs3, as an old libkrun does; built without
 * -DWITH_VSOCK_CONFIG, it lacks krun_disable_implicit_vsock and
 * krun_add_vsock, as a libkrun that cannot turn off TSI does.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void record(const char *fmt, ...) {
	const char *path = getenv("KRUN_STANDIN_LOG");
	FILE *f = fopen(path ? path : "/dev/null", "a");
	if (!f) {
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fclose(f);
}

/* list renders a NULL-terminated array as ["a","b"], or NULL. */
static void list(char *buf, size_t size, const char *const *a) {
	if (!a) {
		snprintf(buf, size, "NULL");
		return;
	}
	size_t n = snprintf(buf, size, "[");
	for (int i = 0; a[i] && n < size; i++) {
		n += snprintf(buf + n, size - n, "%s\"%s\"", i ? "," : "", a[i]);
	}
	if (n < size) {
		snprintf(buf + n, size - n, "]");
	}
}

int32_t krun_create_ctx(void) {
	record("krun_create_ctx() = 7");
	return 7;
}

int32_t krun_free_ctx(uint32_t ctx) {
	record("krun_free_ctx(%" PRIu32 ")", ctx);
	return 0;
}

int32_t krun_set_vm_config(uint32_t ctx, uint8_t cpus, uint32_t mib) {
	record("krun_set_vm_config(%" PRIu32 ", %u, %" PRIu32 ")", ctx, cpus, mib);
	return 0;
}

int32_t krun_set_root(uint32_t ctx, const char *root) {
	record("krun_set_root(%" PRIu32 ", \"%s\")", ctx, root);
	return strcmp(root, "/standin/fail") == 0 ? -ENOENT : 0;
}

#ifdef WITH_VIRTIOFS3
int32_t krun_add_virtiofs3(uint32_t ctx, const char *tag, const char *path, uint64_t shm, bool ro) {
	record("krun_add_virtiofs3(%" PRIu32 ", \"%s\", \"%s\", %" PRIu64 ", %s)", ctx, tag, path, shm, ro ? "true" : "false");
	return 0;
}
#endif

#ifdef WITH_VSOCK_CONFIG
int32_t krun_disable_implicit_vsock(uint32_t ctx) {
	record("krun_disable_implicit_vsock(%" PRIu32 ")", ctx);
	return 0;
}

int32_t krun_add_vsock(uint32_t ctx, uint32_t tsi_features) {
	record("krun_add_vsock(%" PRIu32 ", %" PRIu32 ")", ctx, tsi_features);
	return 0;
}
#endif

int32_t krun_add_vsock_port(uint32_t ctx, uint32_t port, const char *path) {
	record("krun_add_vsock_port(%" PRIu32 ", %" PRIu32 ", \"%s\")", ctx, port, path);
	return 0;
}

int32_t krun_set_console_output(uint32_t ctx, const char *path) {
	record("krun_set_console_output(%" PRIu32 ", \"%s\")", ctx, path);
	return 0;
}

int32_t krun_set_exec(uint32_t ctx, const char *exec, const char *const argv[], const char *const envp[]) {
	char a[4096], e[4096];
	list(a, sizeof a, argv);
	list(e, sizeof e, envp);
	record("krun_set_exec(%" PRIu32 ", \"%s\", %s, %s)", ctx, exec, a, e);
	return 0;
}

int32_t krun_set_env(uint32_t ctx, const char *const envp[]) {
	char e[4096];
	list(e, sizeof e, envp);
	record("krun_set_env(%" PRIu32 ", %s)", ctx, e);
	return 0;
}

int32_t krun_start_enter(uint32_t ctx) {
	record("krun_start_enter(%" PRIu32 ")", ctx);
	exit(42);
}
