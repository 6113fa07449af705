// SPDX-License-Identifier: Apache-2.0
//
// Module entry point of lba_status.node: registers the exports typed by NativeBinding in
// lib/binding.ts and keeps per-environment state (the CommandQueue constructor) in instance
// data, so the addon loads independently in the main thread and in worker_threads.
//
// Exports:
//   createCommandQueue(threads)                      -> CommandQueue (Linux only)
//   createSgAsyncQueue(fd, depth)                    -> SgAsyncQueue (Linux, /dev/sgN only)
//   getLbaStatus16Cdb(lba, allocationLength, reportType)           -> Uint8Array(16)
//   getLbaStatus32Cdb(lba, scanLength, elementId, allocationLength, reportType)
//                                                                   -> Uint8Array(32)
//   parseLbaStatus(data, receivedBytes)              -> LbaStatusColumns
//   allocateAligned(length, alignment)               -> ArrayBuffer (for O_DIRECT reads)
//
// See: sg(4), ioctl(2).

#include <napi.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "js_args.h"
#include "lba_status.h"

#if defined(__linux__)
#include "command_queue.h"
#include "sg_async_queue.h"
#endif

namespace lba_status {

namespace {

constexpr int64_t kMaxUint32 = 0xffffffff;
constexpr int64_t kMaxUint8 = 0xff;
constexpr int64_t kMaxSafeInteger = (int64_t{1} << 53) - 1;

struct AddonData {
  Napi::FunctionReference command_queue;
  Napi::FunctionReference sg_async_queue;
};

Napi::Value CreateCommandQueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(__linux__)
  // Checked here as well as in the constructor so the error names this function's argument.
  GetInteger(info[0], "threads", CommandQueue::kMinThreads, CommandQueue::kMaxThreads);
  AddonData* data = env.GetInstanceData<AddonData>();
  return data->command_queue.New({info[0]});
#else
  throw MakeError(env, "ERR_LBA_STATUS_UNSUPPORTED_PLATFORM",
                  "SG_IO is only available on Linux; the CDB builders and the parser work "
                  "everywhere, and the simulator (lba-status/sim) needs no device.");
#endif
}

Napi::Value CreateSgAsyncQueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(__linux__)
  AddonData* data = env.GetInstanceData<AddonData>();
  return data->sg_async_queue.New({info[0], info[1]});
#else
  throw MakeError(env, "ERR_LBA_STATUS_UNSUPPORTED_PLATFORM",
                  "The sg driver's asynchronous interface exists only on Linux.");
#endif
}

Napi::Value GetLbaStatus16Cdb(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint64_t lba = GetUint64BigInt(info[0], "lba");
  const auto allocation_length =
      static_cast<uint32_t>(GetInteger(info[1], "allocationLength", 0, kMaxUint32));
  const auto report_type = static_cast<uint8_t>(GetInteger(info[2], "reportType", 0, kMaxUint8));
  Napi::Uint8Array cdb = Napi::Uint8Array::New(env, kGetLbaStatus16CdbLength);
  BuildGetLbaStatus16(lba, allocation_length, report_type, cdb.Data());
  return cdb;
}

Napi::Value GetLbaStatus32Cdb(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint64_t lba = GetUint64BigInt(info[0], "lba");
  const auto scan_length = static_cast<uint32_t>(GetInteger(info[1], "scanLength", 0, kMaxUint32));
  const auto element_id = static_cast<uint32_t>(GetInteger(info[2], "elementId", 0, kMaxUint32));
  const auto allocation_length =
      static_cast<uint32_t>(GetInteger(info[3], "allocationLength", 0, kMaxUint32));
  const auto report_type = static_cast<uint8_t>(GetInteger(info[4], "reportType", 0, kMaxUint8));
  Napi::Uint8Array cdb = Napi::Uint8Array::New(env, kGetLbaStatus32CdbLength);
  BuildGetLbaStatus32(lba, scan_length, element_id, allocation_length, report_type, cdb.Data());
  return cdb;
}

Napi::Value ParseLbaStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ByteView data = GetByteView(info[0], "data");
  const auto received =
      static_cast<size_t>(GetInteger(info[1], "receivedBytes", 0, kMaxSafeInteger));
  const LbaStatusLayout layout = MeasureLbaStatus(data.data, data.length, received);

  Napi::Float64Array lba = Napi::Float64Array::New(env, layout.count);
  Napi::Uint32Array blocks = Napi::Uint32Array::New(env, layout.count);
  Napi::Uint8Array status = Napi::Uint8Array::New(env, layout.count);
  Napi::Uint8Array additional = Napi::Uint8Array::New(env, layout.count);
  int64_t unsafe_index = -1;
  if (layout.count > 0) {
    unsafe_index = FillLbaStatusColumns(
        data.data, layout.count,
        LbaStatusColumnsOut{lba.Data(), blocks.Data(), status.Data(), additional.Data()});
  }

  Napi::Object result = Napi::Object::New(env);
  result.Set("parameterDataLength", Napi::Number::New(env, layout.parameter_data_length));
  result.Set("completionCondition", Napi::Number::New(env, layout.completion_condition));
  result.Set("rtp", Napi::Number::New(env, layout.rtp));
  result.Set("validBytes", Napi::Number::New(env, static_cast<double>(layout.valid_bytes)));
  result.Set("truncated", Napi::Boolean::New(env, layout.truncated));
  result.Set("count", Napi::Number::New(env, static_cast<double>(layout.count)));
  result.Set("trailingBytes", Napi::Number::New(env, static_cast<double>(layout.trailing_bytes)));
  result.Set("unsafeLbaIndex", Napi::Number::New(env, static_cast<double>(unsafe_index)));
  result.Set("lba", lba);
  result.Set("blocks", blocks);
  result.Set("status", status);
  result.Set("additional", additional);
  return result;
}

// O_DIRECT needs buffers aligned to the logical block size, which V8's allocator does not
// promise; this one is zero-filled memory from posix_memalign, freed by the GC finalizer.
Napi::Value AllocateAligned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto length = static_cast<size_t>(GetInteger(info[0], "length", 1, int64_t{1} << 31));
  const auto alignment = static_cast<size_t>(GetInteger(info[1], "alignment", 8, 1 << 20));
  if ((alignment & (alignment - 1)) != 0) {
    throw MakeError(env, "ERR_OUT_OF_RANGE", "alignment must be a power of two");
  }
  void* memory = nullptr;
  if (posix_memalign(&memory, alignment, length) != 0 || memory == nullptr) {
    throw MakeError(env, "ERR_LBA_STATUS_NO_MEMORY", "posix_memalign failed");
  }
  std::memset(memory, 0, length);
  // Tell V8 about memory it did not allocate, so that garbage collection keeps pace with
  // large reads instead of letting unreferenced buffers pile up.
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(length));
  return Napi::ArrayBuffer::New(
      env, memory, length,
      [](Napi::Env finalize_env, void* data, size_t* size) {
        std::free(data);
        Napi::MemoryManagement::AdjustExternalMemory(finalize_env, -static_cast<int64_t>(*size));
        delete size;
      },
      new size_t(length));
}

}  // namespace

Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);  // deleted by the env at teardown
#if defined(__linux__)
  data->command_queue = Napi::Persistent(CommandQueue::Init(env));
  data->sg_async_queue = Napi::Persistent(SgAsyncQueue::Init(env));
#endif
  exports.Set("createCommandQueue",
              Napi::Function::New<CreateCommandQueue>(env, "createCommandQueue"));
  exports.Set("createSgAsyncQueue",
              Napi::Function::New<CreateSgAsyncQueue>(env, "createSgAsyncQueue"));
  exports.Set("getLbaStatus16Cdb",
              Napi::Function::New<GetLbaStatus16Cdb>(env, "getLbaStatus16Cdb"));
  exports.Set("getLbaStatus32Cdb",
              Napi::Function::New<GetLbaStatus32Cdb>(env, "getLbaStatus32Cdb"));
  exports.Set("parseLbaStatus", Napi::Function::New<ParseLbaStatus>(env, "parseLbaStatus"));
  exports.Set("allocateAligned", Napi::Function::New<AllocateAligned>(env, "allocateAligned"));
  return exports;
}

}  // namespace lba_status

namespace {

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return lba_status::InitAddon(env, exports);
}

}  // namespace

NODE_API_MODULE(lba_status, InitModule)
