// LD_PRELOAD shim for Debian 12's linux.uml (UML 6.1) on hosts with AVX-512 or AMX.
//
// UML saves and restores each guest thread's FPU/vector state with
// ptrace(PTRACE_GETREGSET/SETREGSET, NT_X86_XSTATE) into a fixed 832-byte buffer (legacy area,
// XSAVE header, AVX). A host whose XSAVE area is larger (AVX-512: 2688 bytes, AMX: ~11 KiB)
// truncates the GET silently but refuses the SET with EFAULT, because the kernel only accepts a
// whole XSAVE buffer; UML then kills its init ("ptrace set fp regs failed, errno = 14").
//
// This shim gives the kernel what it wants without changing UML: every GETREGSET into one of
// UML's buffers is done with a full-size buffer kept beside it (keyed by the buffer's address,
// i.e. per guest thread); the part UML can hold is copied out. A SETREGSET from that buffer
// rebuilds the full image: UML's part (which UML may have changed) plus the saved remainder.
// So a guest thread preempted in the middle of AVX-512 code gets all its registers back.
// Limitation: a guest signal frame holds only UML's 832 bytes, so AVX-512 registers (not
// x87/SSE/AVX) may change across a guest signal handler. Requests whose buffer is already large
// enough pass straight through.
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif
#define XSAVE_HDR_OFFSET 512
#define XSAVE_HDR_END 576

typedef long (*ptrace_fn)(enum __ptrace_request, pid_t, void *, void *);

struct slot {
  void *key;
  unsigned char *full;
};

static ptrace_fn real_ptrace;
static size_t full_size;  // the host's XSAVE regset size, learned from the first GETREGSET
static unsigned char *scratch;
static struct slot *slots;
static size_t nslots, used;

static struct slot *find(void *key, int create) {
  if (create && (used + 1) * 2 > nslots) {
    size_t n = nslots ? nslots * 2 : 1024;
    struct slot *s = calloc(n, sizeof *s);
    if (!s) return NULL;
    for (size_t i = 0; i < nslots; i++) {
      if (!slots[i].key) continue;
      size_t j = ((uintptr_t)slots[i].key >> 4) & (n - 1);
      while (s[j].key) j = (j + 1) & (n - 1);
      s[j] = slots[i];
    }
    free(slots);
    slots = s;
    nslots = n;
  }
  if (!nslots) return NULL;
  size_t j = ((uintptr_t)key >> 4) & (nslots - 1);
  while (slots[j].key) {
    if (slots[j].key == key) return &slots[j];
    j = (j + 1) & (nslots - 1);
  }
  if (!create) return NULL;
  slots[j].full = calloc(1, full_size);
  if (!slots[j].full) return NULL;
  slots[j].key = key;
  used++;
  return &slots[j];
}

// XSAVE components (standard format) that lie wholly inside the first len bytes (cached:
// CPUID traps to the hypervisor on a virtual machine).
static uint64_t components_within(size_t len) {
  static size_t cached_len;
  static uint64_t cached;
  if (len == cached_len) return cached;
  uint64_t mask = 3;  // x87 and SSE live in the legacy area
  for (unsigned i = 2; i < 63; i++) {
    unsigned a, b, c, d;
    __cpuid_count(0xd, i, a, b, c, d);
    if (a && (c & 1) == 0 && (size_t)b + a <= len) mask |= 1ULL << i;
  }
  cached_len = len;
  cached = mask;
  return mask;
}

static long probe_size(pid_t pid) {
  static unsigned char big[1 << 16];
  struct iovec iov = {big, sizeof big};
  long r = real_ptrace(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &iov);
  if (r < 0) return r;
  full_size = iov.iov_len;
  scratch = malloc(full_size);
  return scratch ? 0 : -1;
}

long ptrace(enum __ptrace_request req, ...) {
  va_list ap;
  va_start(ap, req);
  pid_t pid = va_arg(ap, pid_t);
  void *addr = va_arg(ap, void *);
  void *data = va_arg(ap, void *);
  va_end(ap);
  if (!real_ptrace) real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");

  if ((req != PTRACE_GETREGSET && req != PTRACE_SETREGSET) || (uintptr_t)addr != NT_X86_XSTATE)
    return real_ptrace(req, pid, addr, data);
  struct iovec *iov = data;
  if (!full_size && probe_size(pid) < 0) return real_ptrace(req, pid, addr, data);
  if (iov->iov_len >= full_size || iov->iov_len < XSAVE_HDR_END)
    return real_ptrace(req, pid, addr, data);

  if (req == PTRACE_GETREGSET) {
    struct slot *s = find(iov->iov_base, 1);
    if (!s) return real_ptrace(req, pid, addr, data);
    struct iovec big = {s->full, full_size};
    long r = real_ptrace(req, pid, addr, &big);
    if (r < 0) return r;
    if (big.iov_len < iov->iov_len) iov->iov_len = big.iov_len;
    memcpy(iov->iov_base, s->full, iov->iov_len);
    return r;
  }

  struct slot *s = find(iov->iov_base, 0);
  uint64_t inside = components_within(iov->iov_len), bv, rest = 0;
  if (s) {
    memcpy(scratch, s->full, full_size);
    memcpy(&rest, s->full + XSAVE_HDR_OFFSET, sizeof rest);
  } else {
    memset(scratch, 0, full_size);
  }
  memcpy(scratch, iov->iov_base, iov->iov_len);
  memcpy(&bv, scratch + XSAVE_HDR_OFFSET, sizeof bv);
  bv = (bv & inside) | (rest & ~inside);
  memcpy(scratch + XSAVE_HDR_OFFSET, &bv, sizeof bv);
  memset(scratch + XSAVE_HDR_OFFSET + 8, 0, 8);  // XCOMP_BV: standard format
  struct iovec big = {scratch, full_size};
  long r = real_ptrace(req, pid, addr, &big);
  if (r == 0 && s) memcpy(s->full, scratch, full_size);
  return r;
}
