// SPDX-License-Identifier: Apache-2.0
//
// CommandQueue: a fixed set of dedicated native threads that run SG_IO ioctls. They are not
// libuv's shared pool, so a slow or hung device cannot starve fs, dns, crypto or zlib work of the
// host process. JavaScript hands in pinned buffers, a worker thread runs RunSgIo (nothing else),
// and the completion comes back to the JS thread through one thread-safe function per queue,
// which resolves the command's promise with the raw result.
//
// Lifetime: the queue keeps the event loop alive only while commands are pending. close() (or
// the environment's cleanup hook, or the destructor) stops and joins the threads.
//
// See: sg(4), ioctl(2), pthread_sigmask(3).

#ifndef LBA_STATUS_NATIVE_COMMAND_QUEUE_H_
#define LBA_STATUS_NATIVE_COMMAND_QUEUE_H_

#include <napi.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "pending_command.h"

namespace lba_status {

class CommandQueue : public Napi::ObjectWrap<CommandQueue> {
 public:
  static constexpr int64_t kMinThreads = 1;
  static constexpr int64_t kMaxThreads = 64;

  // Defines the JS class (not exported to users; createCommandQueue constructs it).
  static Napi::Function Init(Napi::Env env);

  explicit CommandQueue(const Napi::CallbackInfo& info);
  ~CommandQueue() override;

  CommandQueue(const CommandQueue&) = delete;
  CommandQueue& operator=(const CommandQueue&) = delete;

 private:
  enum class ShutdownReason { kClose, kEnvCleanup, kDestructor };

  static void DeliverCompletion(Napi::Env env, Napi::Function unused, CommandQueue* queue,
                                PendingCommand* job);
  using Completions =
      Napi::TypedThreadSafeFunction<CommandQueue, PendingCommand, DeliverCompletion>;

  static void OnEnvCleanup(void* arg);

  Napi::Value Execute(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value GetThreads(const Napi::CallbackInfo& info);
  Napi::Value GetEngine(const Napi::CallbackInfo& info);

  void StartThreads(size_t count);
  void WorkerLoop();
  void Shutdown(napi_env env, ShutdownReason reason);
  void Settled(Napi::Env env);

  napi_env env_;
  Completions completions_;
  bool completions_released_ = false;
  bool cleanup_hook_registered_ = false;
  bool closed_ = false;  // JS thread only
  size_t pending_ = 0;   // JS thread only: jobs submitted and not yet settled

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<PendingCommand*> queue_;  // guarded by mutex_
  bool stopping_ = false;              // guarded by mutex_
  std::vector<std::thread> threads_;
  size_t thread_count_ = 0;
};

}  // namespace lba_status

#endif  // LBA_STATUS_NATIVE_COMMAND_QUEUE_H_
