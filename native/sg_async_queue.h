// SPDX-License-Identifier: Apache-2.0
//
// SgAsyncQueue: runs SG_IO commands on a /dev/sgN node through the sg driver's asynchronous
// interface, with no thread at all: execute() write()s the command (the kernel queues it and the
// call returns at once), the event loop polls the node, and a completed command is read() and
// settled on the JS thread. Per command that is one wake-up of the JS thread, against three
// thread hand-offs for CommandQueue (JS -> worker, ioctl completion -> worker, worker -> JS), which
// is what dominates per-command cost on fast targets and in virtual machines.
//
// Only sg nodes have this interface (block nodes accept SG_IO only as an ioctl). The price: write()
// may sleep in the kernel (blk_queue_enter while the request queue is frozen, or waiting for a
// tag), and then the JS thread sleeps with it; measured in the guest, a frozen queue held it for
// ~10 s against an in-process target. So it is opt-in (engine 'sg-async'); CommandQueue is the
// default. sg allows 16 commands outstanding per open file: more are held here and
// submitted as earlier ones complete.
//
// Lifetime: the poll handle keeps the event loop alive only while commands are pending. close()
// (or the environment's cleanup hook) stops polling; the caller closes the fd afterwards.
//
// See: sg(4) ("write/read interface"), the Linux SCSI Generic HOWTO, uv_poll_t.

#ifndef LBA_STATUS_NATIVE_SG_ASYNC_QUEUE_H_
#define LBA_STATUS_NATIVE_SG_ASYNC_QUEUE_H_

#include <napi.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <unordered_set>
#include <vector>

#include "pending_command.h"

namespace lba_status {

class SgAsyncQueue : public Napi::ObjectWrap<SgAsyncQueue> {
 public:
  static constexpr int64_t kMinDepth = 1;
  static constexpr int64_t kMaxDepth = 64;
  static constexpr size_t kKernelMaxOutstanding = 16;  // SG_MAX_QUEUE in drivers/scsi/sg.c

  // Defines the JS class (constructed by createSgAsyncQueue(fd, depth)).
  static Napi::Function Init(Napi::Env env);

  explicit SgAsyncQueue(const Napi::CallbackInfo& info);
  ~SgAsyncQueue() override;

  SgAsyncQueue(const SgAsyncQueue&) = delete;
  SgAsyncQueue& operator=(const SgAsyncQueue&) = delete;

 private:
  enum class ShutdownReason { kClose, kEnvCleanup, kDestructor };

  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnEnvCleanup(void* arg);

  Napi::Value Execute(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value GetDepth(const Napi::CallbackInfo& info);
  Napi::Value GetEngine(const Napi::CallbackInfo& info);

  // Submits held commands while the kernel has room; settles those whose write() fails.
  void SubmitHeld(Napi::Env env);
  // Reads one completed command and settles it if it is ours; returns 0 or read()'s errno.
  int ReceiveOne(Napi::Env env);
  // Reads the completed commands and settles them; a failed read or a hang-up breaks the queue.
  void Drain(Napi::Env env);
  // Removes and returns every command in flight or held.
  std::vector<PendingCommand*> TakeAll();
  // The node failed or hung up: stops polling and answers every command in flight or held, and
  // every later one, with `errno_value`.
  void Break(Napi::Env env, int errno_value);
  void Settle(Napi::Env env, PendingCommand* command);
  void StopPolling();
  void Shutdown(napi_env env, ShutdownReason reason);

  napi_env env_;
  int fd_;
  size_t depth_;
  uv_poll_t* poll_ = nullptr;         // heap: freed by the close callback, which may run after us
  Napi::AsyncContext async_context_;  // for the callback scope OnPoll settles promises in
  bool closed_ = false;
  bool cleanup_hook_registered_ = false;
  int broken_errno_ = 0;                           // set once the node reported an error or hung up
  size_t pending_ = 0;                             // in flight + held
  std::unordered_set<PendingCommand*> in_flight_;  // owned; handed to the kernel as usr_ptr
  std::deque<PendingCommand*> held_;               // owned; waiting for a free kernel slot
};

}  // namespace lba_status

#endif  // LBA_STATUS_NATIVE_SG_ASYNC_QUEUE_H_
