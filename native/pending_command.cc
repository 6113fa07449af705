// SPDX-License-Identifier: Apache-2.0
//
// PendingCommand (see pending_command.h): argument checks, pinning and settlement shared by the
// two command engines.

#include "pending_command.h"

#include <algorithm>
#include <string>

#include "js_args.h"

namespace lba_status {

namespace {

constexpr size_t kMinCdbLength = 6;
constexpr size_t kMinSenseLength = 18;
constexpr int64_t kMaxFd = 0x7fffffff;
constexpr int64_t kMaxUint32 = 0xffffffff;

void DeleteReference(napi_env env, napi_ref* ref) {
  if (*ref != nullptr) {
    napi_delete_reference(env, *ref);
    *ref = nullptr;
  }
}

}  // namespace

void PendingCommand::ReadArguments(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  request.fd = static_cast<int>(GetInteger(info[0], "fd", 0, kMaxFd));

  ByteView cdb_view = GetByteView(info[1], "cdb");
  if (cdb_view.length < kMinCdbLength || cdb_view.length > kMaxCdbLength) {
    throw MakeRangeError(env, "The \"cdb\" argument must be 6 to 32 bytes long. Received " +
                                  std::to_string(cdb_view.length) + " bytes");
  }
  std::copy(cdb_view.data, cdb_view.data + cdb_view.length, cdb);
  request.cdb = cdb;
  request.cdb_length = cdb_view.length;

  request.direction = static_cast<SgDirection>(GetInteger(info[2], "direction", 0, 2));

  const bool has_data = !info[3].IsNull() && !info[3].IsUndefined();
  ByteView data;
  if (has_data) data = GetByteView(info[3], "data");
  if (request.direction == SgDirection::kNone && has_data) {
    throw MakeTypeError(env,
                        "The \"data\" argument must be null when direction is None (0). Received " +
                            DescribeReceived(info[3]));
  }
  if (request.direction != SgDirection::kNone && !has_data) {
    throw MakeTypeError(env,
                        "The \"data\" argument must be a Uint8Array when direction is FromDevice "
                        "(1) or ToDevice (2). Received " +
                            DescribeReceived(info[3]));
  }
  if (data.length > static_cast<size_t>(kMaxUint32)) {
    throw MakeRangeError(env, "The \"data\" argument must be at most 4294967295 bytes long");
  }
  request.data = data.data;
  request.data_length = data.length;

  ByteView sense = GetByteView(info[4], "sense");
  if (sense.length < kMinSenseLength) {
    throw MakeRangeError(env, "The \"sense\" argument must be at least 18 bytes long. Received " +
                                  std::to_string(sense.length) + " bytes");
  }
  request.sense = sense.data;
  request.sense_length = sense.length;

  request.timeout_ms = static_cast<uint32_t>(GetInteger(info[5], "timeoutMs", 0, kMaxUint32));

  // Pin the views: a referenced view keeps its ArrayBuffer alive, so the raw pointers taken above
  // stay valid until the command is settled (the caller must not detach/transfer them).
  if ((has_data && napi_create_reference(env, data.holder, 1, &data_ref) != napi_ok) ||
      napi_create_reference(env, sense.holder, 1, &sense_ref) != napi_ok) {
    Unpin(env);
    throw MakeError(env, "ERR_LBA_STATUS_INTERNAL", "Could not pin the buffers");
  }
}

void PendingCommand::Resolve(Napi::Env env) noexcept {
  try {
    Napi::Object result = Napi::Object::New(env);
    result.Set("errno", Napi::Number::New(env, outcome.errno_value));
    result.Set("status", Napi::Number::New(env, outcome.status));
    result.Set("hostStatus", Napi::Number::New(env, outcome.host_status));
    result.Set("driverStatus", Napi::Number::New(env, outcome.driver_status));
    result.Set("senseLength", Napi::Number::New(env, outcome.sense_length));
    result.Set("resid", Napi::Number::New(env, outcome.resid));
    result.Set("durationMs", Napi::Number::New(env, outcome.duration_ms));
    result.Set("info", Napi::Number::New(env, outcome.info));
    deferred.Resolve(result);
  } catch (...) {
    // Only possible while a worker_thread is being terminated; nobody can observe the promise.
  }
}

void PendingCommand::Reject(Napi::Env env, const char* code, const char* message) noexcept {
  try {
    deferred.Reject(MakeError(env, code, message).Value());
  } catch (...) {
  }
}

void PendingCommand::Reject(const Napi::Error& error) noexcept {
  try {
    deferred.Reject(error.Value());
  } catch (...) {
  }
}

void PendingCommand::Unpin(napi_env env) noexcept {
  DeleteReference(env, &data_ref);
  DeleteReference(env, &sense_ref);
}

}  // namespace lba_status
