// SPDX-License-Identifier: Apache-2.0
//
// PendingCommand: one SG_IO command between execute() and the settlement of its promise, shared
// by both command engines (CommandQueue: dedicated threads running the SG_IO ioctl; SgAsyncQueue:
// the sg driver's write()/read() interface polled on the event loop). It owns the copy of the
// CDB, the pins that keep the data and sense buffers alive while the kernel may use them, and the
// outcome. Everything here runs on the JS thread except the request/outcome fields, which the
// engines hand to the kernel.
//
// See: sg(4).

#ifndef LBA_STATUS_NATIVE_PENDING_COMMAND_H_
#define LBA_STATUS_NATIVE_PENDING_COMMAND_H_

#include <napi.h>

#include <cstddef>
#include <cstdint>

#include "sg_io.h"

namespace lba_status {

struct PendingCommand {
  static constexpr size_t kMaxCdbLength = 32;  // Linux rejects longer CDBs with EINVAL since 5.18

  explicit PendingCommand(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}

  // Reads execute(fd, cdb, direction, data, sense, timeoutMs) and pins the buffers. Throws a
  // Napi::Error (TypeError/RangeError with a Node-style code) on misuse.
  void ReadArguments(const Napi::CallbackInfo& info);

  // Resolves the promise with the outcome as a RawSgResult object (lib/binding.ts). Only on the
  // JS thread with a live env; never throws.
  void Resolve(Napi::Env env) noexcept;
  // Rejects the promise with an Error carrying `code`. Never throws.
  void Reject(Napi::Env env, const char* code, const char* message) noexcept;
  void Reject(const Napi::Error& error) noexcept;
  // Drops the pins. Only on the JS thread with a live env.
  void Unpin(napi_env env) noexcept;

  Napi::Promise::Deferred deferred;
  uint8_t cdb[kMaxCdbLength] = {};  // copied: the caller may reuse its CDB buffer at once
  SgRequest request;
  napi_ref data_ref = nullptr;   // pins the data view (and its ArrayBuffer) until settled
  napi_ref sense_ref = nullptr;  // pins the sense view until settled
  SgOutcome outcome;
};

}  // namespace lba_status

#endif  // LBA_STATUS_NATIVE_PENDING_COMMAND_H_
