// SPDX-License-Identifier: Apache-2.0
//
// libFuzzer target for native/lba_status.{h,cc}: the GET LBA STATUS parameter-data parser
// (MeasureLbaStatus, FillLbaStatusColumns) and the CDB builders (BuildGetLbaStatus16/32). Those
// functions are pure byte work with no N-API, so they link here on their own; the harness is
// built with -fsanitize=fuzzer,address,undefined (fuzz/build.sh), so any read or write outside
// the buffers below, and any undefined behaviour, is a crash.
//
// Every input is used twice:
// - as a reply: two control bytes pick the allocation length (the buffer handed to the parser
//   has exactly that many bytes, on the heap, so ASan sees one byte past it) and the received
//   byte count (dxfer_len - resid, which may exceed the allocation length); the rest is the
//   reply. The layout is checked against SBC-4 §5.7 re-derived here, the columns are decoded into
//   arrays of exactly `count` entries and compared field by field, and the LBA guard flag against
//   a 128-bit computation.
// - as CDB fields: the builders must put each field where SBC-4 Tables 48/50 say, and nothing
//   else anywhere.
//
// Invariants are checked with Check(), which prints what broke and aborts: libFuzzer saves the
// input as a crash artifact (see `npm run fuzz` for how to replay it).
//
// See: llvm.org/docs/LibFuzzer.html, sg_get_lba_status(8).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "lba_status.h"

namespace {

using lba_status::LbaStatusColumnsOut;
using lba_status::LbaStatusLayout;

void Check(bool ok, const char* what, unsigned long long a, unsigned long long b) {
  if (ok) return;
  std::fprintf(stderr, "lba_status_fuzzer: invariant broken: %s (got %llu, expected %llu)\n", what,
               a, b);
  std::abort();
}

// Big-endian fields read one byte at a time (independent of the code under test).
uint64_t ReadBe(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = v * 256 + p[i];
  return v;
}

// Consumes bytes from the front of the input; zeros once it runs out.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint64_t Take(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | (pos_ < size_ ? data_[pos_++] : 0);
    return v;
  }
  const uint8_t* rest() const { return data_ + pos_; }
  size_t rest_size() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

void FuzzParser(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint8_t alloc_ctl = static_cast<uint8_t>(in.Take(1));
  const uint8_t recv_ctl = static_cast<uint8_t>(in.Take(1));
  const uint8_t* reply = in.rest();
  const size_t reply_size = in.rest_size();

  // Allocation length: usually the whole reply, sometimes cut short (a smaller buffer).
  size_t allocation = reply_size;
  if (alloc_ctl & 0x80) allocation = reply_size == 0 ? 0 : (alloc_ctl & 0x7f) % (reply_size + 1);
  // Received bytes: all, fewer (resid > 0), or more than allocated (a lying resid; clamped).
  size_t received = allocation;
  switch (recv_ctl >> 6) {
    case 1:
      received = allocation == 0 ? 0 : (recv_ctl & 0x3f) % (allocation + 1);
      break;
    case 2:
      received = allocation + (recv_ctl & 0x3f);
      break;
    case 3:
      received = SIZE_MAX - (recv_ctl & 0x3f);
      break;
    default:
      break;
  }

  // Exactly `allocation` bytes on the heap (a 0-byte buffer too: new[0] is a distinct object).
  std::unique_ptr<uint8_t[]> buf(new uint8_t[allocation]);
  if (allocation > 0) std::memcpy(buf.get(), reply, allocation);

  const LbaStatusLayout layout = lba_status::MeasureLbaStatus(buf.get(), allocation, received);

  const size_t available = allocation < received ? allocation : received;
  const uint64_t pdl = available >= 4 ? ReadBe(buf.get(), 4) : 0;
  const uint64_t described = 4 + pdl;
  const uint64_t valid = described < available ? described : available;
  Check(layout.parameter_data_length == pdl, "parameter_data_length", layout.parameter_data_length,
        pdl);
  Check(layout.valid_bytes == valid, "valid_bytes = min(4 + PDL, allocation, received)",
        layout.valid_bytes, valid);
  Check(layout.valid_bytes <= allocation, "valid_bytes <= allocation", layout.valid_bytes,
        allocation);
  Check(layout.truncated == (described > available), "truncated", layout.truncated,
        described > available);
  if (valid >= 8) {
    Check(layout.count == (valid - 8) / 16, "count", layout.count, (valid - 8) / 16);
    Check(layout.trailing_bytes == (valid - 8) % 16, "trailing_bytes", layout.trailing_bytes,
          (valid - 8) % 16);
    Check(8 + 16 * layout.count + layout.trailing_bytes == valid,
          "8 + 16 * count + trailing_bytes == valid_bytes",
          8 + 16 * layout.count + layout.trailing_bytes, valid);
    Check(layout.completion_condition == ((buf[7] >> 1) & 7), "completion_condition",
          layout.completion_condition, (buf[7] >> 1) & 7);
    Check(layout.rtp == (buf[7] & 1), "rtp", layout.rtp, buf[7] & 1);
  } else {
    Check(layout.count == 0, "count without a header", layout.count, 0);
    Check(layout.trailing_bytes == 0, "trailing_bytes without a header", layout.trailing_bytes, 0);
    Check(layout.completion_condition == 0, "completion_condition without a header",
          layout.completion_condition, 0);
    Check(layout.rtp == 0, "rtp without a header", layout.rtp, 0);
  }

  // Columns of exactly `count` entries: one entry too many written is a heap overflow.
  const size_t n = layout.count;
  std::unique_ptr<double[]> lba(new double[n]);
  std::unique_ptr<uint32_t[]> blocks(new uint32_t[n]);
  std::unique_ptr<uint8_t[]> status(new uint8_t[n]);
  std::unique_ptr<uint8_t[]> additional(new uint8_t[n]);
  const LbaStatusColumnsOut out{lba.get(), blocks.get(), status.get(), additional.get()};
  const int64_t unsafe = lba_status::FillLbaStatusColumns(buf.get(), n, out);

  int64_t expected_unsafe = -1;
  const unsigned __int128 limit = static_cast<unsigned __int128>(1) << 53;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* d = buf.get() + 8 + 16 * i;
    const uint64_t want_lba = ReadBe(d, 8);
    const uint64_t want_blocks = ReadBe(d + 8, 4);
    if (lba[i] != static_cast<double>(want_lba)) {
      std::fprintf(stderr, "lba_status_fuzzer: lba column %zu holds %.17g\n", i, lba[i]);
      Check(false, "lba column", 0, want_lba);
    }
    Check(blocks[i] == want_blocks, "blocks column", blocks[i], want_blocks);
    Check(status[i] == (d[12] & 0x0f), "status column", status[i], d[12] & 0x0f);
    Check(additional[i] == d[13], "additional column", additional[i], d[13]);
    const unsigned __int128 end = static_cast<unsigned __int128>(want_lba) + want_blocks;
    if (expected_unsafe < 0 && (want_lba >= limit || end > limit)) {
      expected_unsafe = static_cast<int64_t>(i);
    }
  }
  Check(unsafe == expected_unsafe, "unsafe LBA index (first LBA >= 2^53 or LBA + blocks > 2^53)",
        static_cast<uint64_t>(unsafe), static_cast<uint64_t>(expected_unsafe));
}

// Every byte of a CDB is either one of the fields or a constant: build the expected bytes from
// the field table and compare the whole CDB.
struct Field {
  size_t offset;
  int bytes;
  uint64_t value;
};

void ExpectCdb(const uint8_t* cdb, size_t length, const std::vector<Field>& fields,
               const char* name) {
  std::vector<uint8_t> want(length, 0);
  for (const Field& f : fields) {
    uint64_t v = f.value;
    for (int i = f.bytes - 1; i >= 0; --i) {
      want[f.offset + static_cast<size_t>(i)] = static_cast<uint8_t>(v & 0xff);
      v >>= 8;
    }
  }
  for (size_t i = 0; i < length; ++i) {
    if (cdb[i] != want[i]) {
      std::fprintf(stderr, "lba_status_fuzzer: %s byte %zu\n", name, i);
      Check(false, "CDB byte", cdb[i], want[i]);
    }
  }
  // And back out: each field read from the bytes is the value put in.
  for (const Field& f : fields) {
    Check(ReadBe(cdb + f.offset, f.bytes) == f.value, name, ReadBe(cdb + f.offset, f.bytes),
          f.value);
  }
}

void FuzzBuilders(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint64_t lba = in.Take(8);
  const uint32_t allocation = static_cast<uint32_t>(in.Take(4));
  const uint32_t scan = static_cast<uint32_t>(in.Take(4));
  const uint32_t element = static_cast<uint32_t>(in.Take(4));
  const uint8_t report_type = static_cast<uint8_t>(in.Take(1));

  // Heap buffers of exactly the CDB length, pre-filled with garbage: every byte must be written.
  std::unique_ptr<uint8_t[]> cdb16(new uint8_t[lba_status::kGetLbaStatus16CdbLength]);
  std::memset(cdb16.get(), 0xa5, lba_status::kGetLbaStatus16CdbLength);
  lba_status::BuildGetLbaStatus16(lba, allocation, report_type, cdb16.get());
  ExpectCdb(cdb16.get(), lba_status::kGetLbaStatus16CdbLength,
            {{0, 1, 0x9e}, {1, 1, 0x12}, {2, 8, lba}, {10, 4, allocation}, {14, 1, report_type}},
            "GET LBA STATUS(16)");

  std::unique_ptr<uint8_t[]> cdb32(new uint8_t[lba_status::kGetLbaStatus32CdbLength]);
  std::memset(cdb32.get(), 0x5a, lba_status::kGetLbaStatus32CdbLength);
  lba_status::BuildGetLbaStatus32(lba, scan, element, allocation, report_type, cdb32.get());
  ExpectCdb(cdb32.get(), lba_status::kGetLbaStatus32CdbLength,
            {{0, 1, 0x7f},
             {7, 1, 0x18},
             {8, 2, 0x0012},
             {10, 1, report_type},
             {12, 8, lba},
             {20, 4, scan},
             {24, 4, element},
             {28, 4, allocation}},
            "GET LBA STATUS(32)");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzParser(data, size);
  FuzzBuilders(data, size);
  return 0;
}
