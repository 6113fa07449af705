// SPDX-License-Identifier: Apache-2.0
//
// GET LBA STATUS (16/32) CDB builders and parameter-data parser (see lba_status.h).
// See: sg(4), ioctl(2), sg_get_lba_status(8).

#include "lba_status.h"

#include <algorithm>
#include <cstring>

namespace lba_status {

namespace {

void PutBe16(uint16_t value, uint8_t* out) {
  out[0] = static_cast<uint8_t>(value >> 8);
  out[1] = static_cast<uint8_t>(value);
}

void PutBe32(uint32_t value, uint8_t* out) {
  for (int i = 3; i >= 0; --i) {
    out[i] = static_cast<uint8_t>(value);
    value >>= 8;
  }
}

void PutBe64(uint64_t value, uint8_t* out) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<uint8_t>(value);
    value >>= 8;
  }
}

uint32_t GetBe32(const uint8_t* in) {
  return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) |
         uint32_t{in[3]};
}

uint64_t GetBe64(const uint8_t* in) {
  return (uint64_t{GetBe32(in)} << 32) | uint64_t{GetBe32(in + 4)};
}

constexpr uint8_t kServiceActionIn16 = 0x9e;
constexpr uint8_t kVariableLengthCdb = 0x7f;
constexpr uint16_t kGetLbaStatusServiceAction = 0x0012;

}  // namespace

void BuildGetLbaStatus16(uint64_t lba, uint32_t allocation_length, uint8_t report_type,
                         uint8_t out[kGetLbaStatus16CdbLength]) {
  std::memset(out, 0, kGetLbaStatus16CdbLength);
  out[0] = kServiceActionIn16;
  out[1] = static_cast<uint8_t>(kGetLbaStatusServiceAction);  // bits 4:0; 7:5 reserved
  PutBe64(lba, out + 2);
  PutBe32(allocation_length, out + 10);
  out[14] = report_type;
  // out[15] CONTROL stays 0.
}

void BuildGetLbaStatus32(uint64_t lba, uint32_t scan_length, uint32_t element_id,
                         uint32_t allocation_length, uint8_t report_type,
                         uint8_t out[kGetLbaStatus32CdbLength]) {
  std::memset(out, 0, kGetLbaStatus32CdbLength);
  out[0] = kVariableLengthCdb;
  // out[1] CONTROL and out[2..6] stay 0.
  out[7] = static_cast<uint8_t>(kGetLbaStatus32CdbLength - 8);  // ADDITIONAL CDB LENGTH
  PutBe16(kGetLbaStatusServiceAction, out + 8);
  out[10] = report_type;
  PutBe64(lba, out + 12);
  PutBe32(scan_length, out + 20);
  PutBe32(element_id, out + 24);
  PutBe32(allocation_length, out + 28);
}

LbaStatusLayout MeasureLbaStatus(const uint8_t* data, size_t allocation_length,
                                 size_t received_bytes) {
  LbaStatusLayout layout;
  const size_t available = std::min(allocation_length, received_bytes);
  if (available >= 4) layout.parameter_data_length = GetBe32(data);
  // 4 + PDL computed in 64 bits: PDL may be up to 2^32 - 1.
  const uint64_t described = uint64_t{4} + layout.parameter_data_length;
  layout.truncated = described > available;
  layout.valid_bytes = static_cast<size_t>(std::min<uint64_t>(described, available));
  if (layout.valid_bytes >= kLbaStatusHeaderLength) {
    layout.completion_condition = static_cast<uint8_t>((data[7] >> 1) & 0x7);
    layout.rtp = static_cast<uint8_t>(data[7] & 0x1);
    const size_t body = layout.valid_bytes - kLbaStatusHeaderLength;
    layout.count = body / kLbaStatusDescriptorLength;
    layout.trailing_bytes = body % kLbaStatusDescriptorLength;
  }
  return layout;
}

int64_t FillLbaStatusColumns(const uint8_t* data, size_t count, const LbaStatusColumnsOut& out) {
  int64_t unsafe_index = -1;
  const uint8_t* descriptor = data + kLbaStatusHeaderLength;
  for (size_t i = 0; i < count; ++i, descriptor += kLbaStatusDescriptorLength) {
    const uint64_t lba = GetBe64(descriptor);
    const uint32_t blocks = GetBe32(descriptor + 8);
    out.lba[i] = static_cast<double>(lba);
    out.blocks[i] = blocks;
    out.status[i] = static_cast<uint8_t>(descriptor[12] & 0x0f);
    out.additional[i] = descriptor[13];
    // lba < 2^53 here, so lba + blocks < 2^53 + 2^32 cannot overflow.
    if (unsafe_index < 0 && (lba >= kExactDoubleLimit || lba + blocks > kExactDoubleLimit)) {
      unsafe_index = static_cast<int64_t>(i);
    }
  }
  return unsafe_index;
}

}  // namespace lba_status
