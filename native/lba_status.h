// SPDX-License-Identifier: Apache-2.0
//
// GET LBA STATUS (16) and (32): CDB builders and a parameter-data parser. Pure byte work, no
// I/O and no JavaScript. The parser only reports facts about the bytes (how many are valid, how
// many whole descriptors, whether the reply was cut); whether a reply is acceptable is decided by
// the TypeScript scanner.
//
// Layouts: SBC-4 §5.6 (Tables 48, 50, 52) and §5.7 (Table 55); all fields big-endian.
// See: sg(4), ioctl(2), sg_get_lba_status(8).

#ifndef LBA_STATUS_NATIVE_LBA_STATUS_H_
#define LBA_STATUS_NATIVE_LBA_STATUS_H_

#include <cstddef>
#include <cstdint>

namespace lba_status {

constexpr size_t kGetLbaStatus16CdbLength = 16;
constexpr size_t kGetLbaStatus32CdbLength = 32;
constexpr size_t kLbaStatusHeaderLength = 8;
constexpr size_t kLbaStatusDescriptorLength = 16;

// Largest integer n such that every integer in [0, n] is exact in a double: 2^53.
constexpr uint64_t kExactDoubleLimit = uint64_t{1} << 53;

// SERVICE ACTION IN (16) 9Eh / 12h: writes exactly 16 bytes to out.
void BuildGetLbaStatus16(uint64_t lba, uint32_t allocation_length, uint8_t report_type,
                         uint8_t out[kGetLbaStatus16CdbLength]);

// VARIABLE LENGTH 7Fh / 0012h: writes exactly 32 bytes to out.
void BuildGetLbaStatus32(uint64_t lba, uint32_t scan_length, uint32_t element_id,
                         uint32_t allocation_length, uint8_t report_type,
                         uint8_t out[kGetLbaStatus32CdbLength]);

// What the bytes of one reply say, before any descriptor is decoded.
struct LbaStatusLayout {
  uint32_t parameter_data_length = 0;  // bytes 0..3; 0 when fewer than 4 bytes are available
  uint8_t completion_condition = 0;    // byte 7 bits 3:1; 0 when fewer than 8 valid bytes
  uint8_t rtp = 0;                     // byte 7 bit 0; 0 when fewer than 8 valid bytes
  size_t valid_bytes = 0;              // min(4 + PDL, allocation length, received bytes)
  bool truncated = false;              // 4 + PDL > min(allocation length, received bytes)
  size_t count = 0;                    // whole 16-byte descriptors within valid_bytes
  size_t trailing_bytes = 0;           // bytes of a partial descriptor after the last whole one
};

// Reads the header of a reply. data holds allocation_length bytes, of which the device really
// sent received_bytes (dxfer_len - resid). received_bytes larger than allocation_length is
// clamped. PARAMETER DATA LENGTH is only read when at least 4 bytes are available; the header
// byte 7 only when at least 8 bytes are valid.
LbaStatusLayout MeasureLbaStatus(const uint8_t* data, size_t allocation_length,
                                 size_t received_bytes);

// Caller-owned columns, each with room for layout.count entries.
struct LbaStatusColumnsOut {
  double* lba;
  uint32_t* blocks;
  uint8_t* status;      // PROVISIONING STATUS, byte 12 bits 3:0 (bits 7:4 are ignored)
  uint8_t* additional;  // ADDITIONAL STATUS, byte 13
};

// Decodes `count` descriptors starting at data + 8 into the columns. Returns the index of the
// first descriptor whose LBA is not a safe integer (>= 2^53) or whose end (LBA + blocks) exceeds
// 2^53, or -1 if every value is exact. Such an LBA is stored rounded to the nearest double.
int64_t FillLbaStatusColumns(const uint8_t* data, size_t count, const LbaStatusColumnsOut& out);

}  // namespace lba_status

#endif  // LBA_STATUS_NATIVE_LBA_STATUS_H_
