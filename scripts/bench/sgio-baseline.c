// SPDX-License-Identifier: Apache-2.0
//
// sgio-baseline: the floor for a GET LBA STATUS scan. Issues the same SG_IO commands as
// lba-status (same CDB form, allocation length, report type, 1 GiB windows for the 32-byte form)
// back to back on one thread, follows the same continuation rules, counts the descriptors kept
// and prints one JSON line per repetition. No validation beyond what continuing needs: it is
// the limit, not a scanner. Built at bench time by scripts/bench/run.mjs.
//
//   sgio-baseline DEVICE CDB(16|32) REPORT_TYPE ALLOCATION_LENGTH WINDOW_BLOCKS REPETITIONS
//
// Output per repetition: {"commands":N,"descriptors":N,"ns":N}
//
//   sgio-baseline --syscall-cost
//
// prints {"getppidNs":N,"clockGettimeNs":N}: what one system call costs on this kernel (a
// trivial one, and the clock read that an event loop makes every iteration). Under User-Mode
// Linux both are real trips through the host's ptrace, which is what figure 2 is made of.
#include <errno.h>
#include <fcntl.h>
#include <scsi/sg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static int fd;
static unsigned char sense[64];

static uint64_t be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

static void put(unsigned char *p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

// One command; returns the bytes received, exits on any error.
static int sg(unsigned char *cdb, int cdb_len, unsigned char *buf, int len) {
  sg_io_hdr_t h;
  memset(&h, 0, sizeof h);
  h.interface_id = 'S';
  h.dxfer_direction = SG_DXFER_FROM_DEV;
  h.cmd_len = (unsigned char)cdb_len;
  h.cmdp = cdb;
  h.dxferp = buf;
  h.dxfer_len = (unsigned)len;
  h.sbp = sense;
  h.mx_sb_len = sizeof sense;
  h.timeout = 60000;
  if (ioctl(fd, SG_IO, &h) < 0) {
    fprintf(stderr, "SG_IO: %s\n", strerror(errno));
    exit(3);
  }
  if (h.status || h.host_status || (h.driver_status & ~8)) {
    fprintf(stderr, "command failed: status 0x%x host 0x%x driver 0x%x sense key 0x%x\n", h.status,
            h.host_status, h.driver_status, h.sb_len_wr > 2 ? sense[2] & 0xf : 0);
    exit(4);
  }
  return len - h.resid;
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int syscall_cost(void) {
  const int n = 20000;
  uint64_t t0 = now_ns();
  for (int i = 0; i < n; i++) getppid();
  uint64_t t1 = now_ns();
  for (int i = 0; i < n; i++) now_ns();
  uint64_t t2 = now_ns();
  printf("{\"getppidNs\":%llu,\"clockGettimeNs\":%llu}\n", (unsigned long long)((t1 - t0) / n),
         (unsigned long long)((t2 - t1) / n));
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--syscall-cost") == 0) return syscall_cost();
  if (argc != 7) {
    fprintf(stderr, "usage: sgio-baseline DEVICE 16|32 REPORT_TYPE ALLOC WINDOW_BLOCKS REPS\n");
    return 2;
  }
  int form = atoi(argv[2]), report_type = atoi(argv[3]), alloc = atoi(argv[4]);
  uint64_t window = strtoull(argv[5], NULL, 10);
  int reps = atoi(argv[6]);
  fd = open(argv[1], O_RDWR | O_NONBLOCK);
  if (fd < 0) {
    fprintf(stderr, "open %s: %s\n", argv[1], strerror(errno));
    return 3;
  }
  unsigned char *buf = malloc((size_t)alloc), cdb[32];
  // READ CAPACITY(16) once, outside the timing.
  memset(cdb, 0, 16);
  cdb[0] = 0x9e;
  cdb[1] = 0x10;
  put(cdb + 10, 32, 4);
  sg(cdb, 16, buf, 32);
  uint64_t capacity = be(buf, 8) + 1;

  for (int rep = 0; rep < reps; rep++) {
    uint64_t commands = 0, descriptors = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t cursor = 0;
    while (cursor < capacity) {
      // 32: windows of WINDOW_BLOCKS from LBA 0, as the scanner cuts them; 16: no window.
      uint64_t window_end = capacity;
      if (form == 32 && (cursor / window + 1) * window < capacity)
        window_end = (cursor / window + 1) * window;
      memset(cdb, 0, 32);
      int cdb_len;
      if (form == 32) {
        cdb_len = 32;
        cdb[0] = 0x7f;
        cdb[7] = 0x18;
        put(cdb + 8, 0x0012, 2);
        put(cdb + 12, cursor, 8);
        put(cdb + 20, window_end - cursor, 4);
        put(cdb + 24, 0, 4);  // element id
        put(cdb + 28, (uint64_t)alloc, 4);
        cdb[10] = (unsigned char)report_type;
      } else {
        cdb_len = 16;
        cdb[0] = 0x9e;
        cdb[1] = 0x12;
        put(cdb + 2, cursor, 8);
        put(cdb + 10, (uint64_t)alloc, 4);
        cdb[14] = (unsigned char)report_type;
      }
      int got = sg(cdb, cdb_len, buf, alloc);
      commands++;
      if (got < 8) {
        fprintf(stderr, "short reply (%d bytes)\n", got);
        return 6;
      }
      uint64_t pdl = be(buf, 4);
      uint64_t valid = 4 + pdl < (uint64_t)got ? 4 + pdl : (uint64_t)got;
      int truncated = 4 + pdl > (uint64_t)got;
      int condition = (buf[7] >> 1) & 7;
      uint64_t n = (valid - 8) / 16, last_end = 0;
      int kept = 0;
      for (uint64_t i = 0; i < n; i++) {
        const unsigned char *d = buf + 8 + 16 * i;
        uint64_t lba = be(d, 8), end = lba + be(d + 8, 4);
        if (lba < cursor) lba = cursor;
        if (lba >= window_end) break;
        if (end > window_end) end = window_end;
        kept++;
        last_end = end;
        if (end == window_end) break;
      }
      descriptors += (uint64_t)kept;
      uint64_t next;
      if (truncated || condition == 1)
        next = kept ? last_end : window_end;
      else if (condition == 2 || condition == 3)
        next = window_end;
      else
        next = kept ? last_end : (form == 16 ? capacity : window_end);
      if (next <= cursor) {
        fprintf(stderr, "no progress at LBA %llu\n", (unsigned long long)cursor);
        return 6;
      }
      cursor = next;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    printf("{\"commands\":%llu,\"descriptors\":%llu,\"ns\":%lld}\n", (unsigned long long)commands,
           (unsigned long long)descriptors, ns);
    fflush(stdout);
  }
  close(fd);
  return 0;
}
