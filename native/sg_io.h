// SPDX-License-Identifier: Apache-2.0
//
// One SG_IO (sg v3 interface) command, synchronous or through sg's write()/read(), with no policy:
// the caller supplies every field and gets back what the kernel reported, field by field.
// Interpretation (errno vs transport vs SCSI status, retries, sense decoding) belongs to the
// TypeScript layer. This file knows nothing about JavaScript so it can be reviewed and exercised on
// its own.
//
// See: sg(4), ioctl(2), the Linux SCSI Generic HOWTO (SG_IO, struct sg_io_hdr).

#ifndef LBA_STATUS_NATIVE_SG_IO_H_
#define LBA_STATUS_NATIVE_SG_IO_H_

#include <cstddef>
#include <cstdint>

namespace lba_status {

// Direction of the data phase; the numeric values are part of the JS contract
// (DataDirection in lib/binding.ts).
enum class SgDirection : int {
  kNone = 0,        // SG_DXFER_NONE
  kFromDevice = 1,  // SG_DXFER_FROM_DEV
  kToDevice = 2,    // SG_DXFER_TO_DEV
};

// Everything one SG_IO call needs. The buffers are borrowed: they must stay valid (and must not
// move) until RunSgIo returns.
struct SgRequest {
  int fd = -1;
  const uint8_t* cdb = nullptr;
  size_t cdb_length = 0;  // 6..32 (the kernel rejects anything else; callers check first)
  SgDirection direction = SgDirection::kNone;
  uint8_t* data = nullptr;  // data-in or data-out; may be null when data_length is 0
  size_t data_length = 0;   // must fit in 32 bits (sg_io_hdr.dxfer_len)
  uint8_t* sense = nullptr;
  size_t sense_length = 0;  // mx_sb_len = min(sense_length, 255)
  uint32_t timeout_ms = 0;  // sg_io_hdr.timeout
};

// The raw outcome. When the ioctl itself failed, errno_value is set and every other field is 0.
struct SgOutcome {
  int errno_value = 0;
  uint32_t status = 0;         // sg_io_hdr.status (SCSI status byte)
  uint32_t host_status = 0;    // sg_io_hdr.host_status (DID_*)
  uint32_t driver_status = 0;  // sg_io_hdr.driver_status
  uint32_t sense_length = 0;   // sg_io_hdr.sb_len_wr
  int32_t resid = 0;           // sg_io_hdr.resid
  uint32_t duration_ms = 0;    // sg_io_hdr.duration
  uint32_t info = 0;           // sg_io_hdr.info (bit 0 = SG_INFO_CHECK)
};

// Issues ioctl(fd, SG_IO, &hdr) and copies the result fields. Retries the ioctl when it fails
// with EINTR. Blocks for as long as the device takes (bounded by timeout_ms plus the SCSI error
// handler's abort time), so it must never run on the JS thread. Never throws.
SgOutcome RunSgIo(const SgRequest& request) noexcept;

// The sg driver's asynchronous interface (/dev/sgN only): SubmitSg write()s the v3 header, which
// queues the command and returns at once; the kernel keeps `tag` and hands it back with the
// outcome when ReceiveSg read()s the completed command. The data and sense buffers must stay
// valid until then: sg copies data-in and sense into them during that read(). Returns 0 or the
// errno of the write (EDOM: the fd already has 16 commands outstanding). Never throws.
int SubmitSg(const SgRequest& request, void* tag) noexcept;

// Reads one completed command (the fd must be O_NONBLOCK). Returns 0 and fills *outcome and
// *tag, EAGAIN when nothing has completed, or another errno. Never throws.
int ReceiveSg(int fd, SgOutcome* outcome, void** tag) noexcept;

}  // namespace lba_status

#endif  // LBA_STATUS_NATIVE_SG_IO_H_
