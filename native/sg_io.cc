// SPDX-License-Identifier: Apache-2.0
//
// RunSgIo: fills a v3 struct sg_io_hdr (interface_id 'S'), calls ioctl(fd, SG_IO) and copies the
// kernel's answer. SubmitSg/ReceiveSg pass the same header through write()/read() on /dev/sgN. Both
// /dev/sgN and /dev/sdX accept the v3 header, which is why it is used rather than sg v4. Linux
// only.
//
// See: sg(4), ioctl(2), the Linux SCSI Generic HOWTO (SG_IO, struct sg_io_hdr).

#include "sg_io.h"

#include <scsi/sg.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace lba_status {

namespace {

int ToKernelDirection(SgDirection direction) {
  switch (direction) {
    case SgDirection::kFromDevice:
      return SG_DXFER_FROM_DEV;
    case SgDirection::kToDevice:
      return SG_DXFER_TO_DEV;
    case SgDirection::kNone:
      break;
  }
  return SG_DXFER_NONE;
}

void FillHeader(const SgRequest& request, sg_io_hdr_t* hdr) {
  std::memset(hdr, 0, sizeof(*hdr));
  hdr->interface_id = 'S';
  hdr->dxfer_direction = ToKernelDirection(request.direction);
  // cmd_len is an unsigned char; callers validate 6..32 first, the cast cannot truncate then.
  hdr->cmd_len = static_cast<unsigned char>(request.cdb_length);
  hdr->cmdp = const_cast<unsigned char*>(request.cdb);
  hdr->mx_sb_len = static_cast<unsigned char>(std::min<size_t>(request.sense_length, 255));
  hdr->sbp = request.sense;
  if (request.direction != SgDirection::kNone) {
    hdr->dxfer_len = static_cast<unsigned int>(request.data_length);
    hdr->dxferp = request.data;
  }
  hdr->timeout = request.timeout_ms;
}

SgOutcome CopyOutcome(const sg_io_hdr_t& hdr) {
  SgOutcome outcome;
  outcome.status = hdr.status;
  outcome.host_status = hdr.host_status;
  outcome.driver_status = hdr.driver_status;
  outcome.sense_length = hdr.sb_len_wr;
  outcome.resid = hdr.resid;
  outcome.duration_ms = hdr.duration;
  outcome.info = hdr.info;
  return outcome;
}

}  // namespace

SgOutcome RunSgIo(const SgRequest& request) noexcept {
  sg_io_hdr_t hdr;
  FillHeader(request, &hdr);
  int rc;
  do {
    rc = ioctl(request.fd, SG_IO, &hdr);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    SgOutcome outcome;
    outcome.errno_value = errno;
    return outcome;
  }
  return CopyOutcome(hdr);
}

int SubmitSg(const SgRequest& request, void* tag) noexcept {
  sg_io_hdr_t hdr;
  FillHeader(request, &hdr);
  hdr.usr_ptr = tag;
  ssize_t written;
  do {
    written = write(request.fd, &hdr, sizeof(hdr));
  } while (written < 0 && errno == EINTR);
  if (written < 0) return errno;
  return written == static_cast<ssize_t>(sizeof(hdr)) ? 0 : EIO;
}

int ReceiveSg(int fd, SgOutcome* outcome, void** tag) noexcept {
  sg_io_hdr_t hdr;
  std::memset(&hdr, 0, sizeof(hdr));
  hdr.interface_id = 'S';  // sg reads the header first to learn the interface version
  ssize_t received;
  do {
    received = read(fd, &hdr, sizeof(hdr));
  } while (received < 0 && errno == EINTR);
  if (received < 0) return errno;
  if (received != static_cast<ssize_t>(sizeof(hdr))) return EIO;
  *outcome = CopyOutcome(hdr);
  *tag = hdr.usr_ptr;
  return 0;
}

}  // namespace lba_status
