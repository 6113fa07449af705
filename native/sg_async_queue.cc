// SPDX-License-Identifier: Apache-2.0
//
// SgAsyncQueue implementation (see sg_async_queue.h). Everything runs on the JS thread: execute()
// and close() are JS calls, OnPoll is a libuv callback on the same loop. The kernel copies data-in
// and sense into the pinned buffers only inside our read(), so a command that is settled without
// being read (close, hang-up) leaves nothing the kernel could still write to.
//
// See: sg(4), poll(2), uv_poll_t.

#include "sg_async_queue.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string>

#include "js_args.h"
#include "sg_io.h"

namespace lba_status {

namespace {

constexpr int64_t kMaxFd = 0x7fffffff;
constexpr const char* kQueueClosed = "ERR_LBA_STATUS_QUEUE_CLOSED";

}  // namespace

Napi::Function SgAsyncQueue::Init(Napi::Env env) {
  return ObjectWrap<SgAsyncQueue>::DefineClass(
      env, "SgAsyncQueue",
      {
          InstanceMethod<&SgAsyncQueue::Execute>("execute"),
          InstanceMethod<&SgAsyncQueue::Close>("close"),
          InstanceAccessor<&SgAsyncQueue::GetDepth>("depth"),
          InstanceAccessor<&SgAsyncQueue::GetEngine>("engine"),
      });
}

SgAsyncQueue::SgAsyncQueue(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<SgAsyncQueue>(info),
      env_(info.Env()),
      fd_(static_cast<int>(GetInteger(info[0], "fd", 0, kMaxFd))),
      depth_(static_cast<size_t>(GetInteger(info[1], "depth", kMinDepth, kMaxDepth))),
      async_context_(info.Env(), "lba-status:sg") {
  Napi::Env env = info.Env();
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    throw MakeError(env, "ERR_LBA_STATUS_INTERNAL", "No event loop for this environment");
  }
  auto poll = std::make_unique<uv_poll_t>();
  int rc = uv_poll_init(loop, poll.get(), fd_);
  if (rc == 0) {
    poll->data = this;
    rc = uv_poll_start(poll.get(), UV_READABLE, OnPoll);
    if (rc != 0) {
      // An initialised handle must be closed through the loop; the callback frees it.
      uv_close(reinterpret_cast<uv_handle_t*>(poll.release()),
               [](uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); });
    }
  }
  if (rc != 0) {
    Napi::Error error =
        MakeError(env, uv_err_name(rc),
                  std::string("Cannot poll the sg node for completions: ") + uv_strerror(rc));
    error.Set("errno", Napi::Number::New(env, -rc));
    error.Set("syscall", Napi::String::New(env, "epoll_ctl"));
    throw error;
  }
  poll_ = poll.release();
  // An idle queue must not keep the process alive; Execute refs the handle while commands pend.
  uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
  if (napi_add_env_cleanup_hook(env, OnEnvCleanup, this) == napi_ok) {
    cleanup_hook_registered_ = true;
  }
}

SgAsyncQueue::~SgAsyncQueue() {
  // Pending commands hold a strong reference to this object, so the destructor only runs when
  // the queue is idle or the environment is being torn down.
  Shutdown(env_, ShutdownReason::kDestructor);
}

Napi::Value SgAsyncQueue::Execute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto command = std::make_unique<PendingCommand>(env);
  Napi::Promise promise = command->deferred.Promise();
  if (closed_) {
    command->Reject(env, kQueueClosed, "The SG_IO command queue is closed; open the device again.");
    return promise;
  }
  try {
    command->ReadArguments(info);
  } catch (const Napi::Error& error) {
    command->Reject(error);
    return promise;
  }
  if (pending_++ == 0) {
    uv_ref(reinterpret_cast<uv_handle_t*>(poll_));  // a pending command keeps the loop alive
    napi_reference_ref(env, static_cast<napi_ref>(*this), nullptr);  // and this wrapper
  }
  if (broken_errno_ != 0) {
    // The node hung up or failed: answer as the ioctl would, with errno (TS classifies it).
    command->outcome.errno_value = broken_errno_;
    Settle(env, command.release());
    return promise;
  }
  held_.push_back(command.release());
  SubmitHeld(env);
  return promise;
}

void SgAsyncQueue::SubmitHeld(Napi::Env env) {
  const size_t limit = std::min(depth_, kKernelMaxOutstanding);
  while (!held_.empty() && in_flight_.size() < limit) {
    PendingCommand* command = held_.front();
    const int error = SubmitSg(command->request, command);
    if ((error == EDOM || error == EAGAIN) && !in_flight_.empty()) {
      break;  // the kernel is full after all: retry when the next command completes
    }
    held_.pop_front();
    if (error == 0) {
      in_flight_.insert(command);
    } else {
      command->outcome.errno_value = error;
      Settle(env, command);
    }
  }
}

void SgAsyncQueue::OnPoll(uv_poll_t* handle, int status, int /*events*/) {
  auto* queue = static_cast<SgAsyncQueue*>(handle->data);
  napi_env env = queue->env_;
  Napi::HandleScope handle_scope(env);
  // Settling promises from a libuv callback: the callback scope runs the microtasks and
  // nextTicks (the awaiting code) when it closes, as for any native callback.
  Napi::CallbackScope callback_scope(env, queue->async_context_);
  if (status < 0) {
    // POLLERR: libuv has stopped watching the fd.
    queue->Break(Napi::Env(env), -status);
    return;
  }
  queue->Drain(Napi::Env(env));
  queue->SubmitHeld(Napi::Env(env));
}

int SgAsyncQueue::ReceiveOne(Napi::Env env) {
  SgOutcome outcome;
  void* tag = nullptr;
  const int error = ReceiveSg(fd_, &outcome, &tag);
  if (error != 0) return error;
  auto* command = static_cast<PendingCommand*>(tag);
  // Only commands in flight are ours to settle; one that close() or a hang-up already settled
  // (unread) may still complete, and is dropped.
  if (in_flight_.erase(command) == 1) {
    command->outcome = outcome;
    Settle(env, command);
  }
  return 0;
}

void SgAsyncQueue::Drain(Napi::Env env) {
  bool received = false;
  int error = 0;
  // Once nothing is in flight, stop: the read() that would return EAGAIN costs a system call.
  while (!(received && in_flight_.empty())) {
    error = ReceiveOne(env);
    if (error != 0) break;
    received = true;
  }
  if (error != 0 && error != EAGAIN) return Break(env, error);
  if (received) return;
  // Woken with nothing to read: sg reports POLLHUP while the device is being detached, and a
  // level-triggered hang-up would wake us forever.
  pollfd probe = {fd_, POLLIN, 0};
  if (poll(&probe, 1, 0) == 1 && (probe.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) {
    Break(env, ENODEV);
  }
}

std::vector<PendingCommand*> SgAsyncQueue::TakeAll() {
  std::vector<PendingCommand*> all(in_flight_.begin(), in_flight_.end());
  all.insert(all.end(), held_.begin(), held_.end());
  in_flight_.clear();
  held_.clear();
  return all;
}

void SgAsyncQueue::Break(Napi::Env env, int errno_value) {
  broken_errno_ = errno_value;
  StopPolling();
  for (PendingCommand* command : TakeAll()) {
    command->outcome = SgOutcome{};
    command->outcome.errno_value = errno_value;
    Settle(env, command);
  }
}

void SgAsyncQueue::Settle(Napi::Env env, PendingCommand* command) {
  std::unique_ptr<PendingCommand> owned(command);
  owned->Resolve(env);
  owned->Unpin(env);
  if (--pending_ == 0) {
    if (poll_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    napi_reference_unref(env, static_cast<napi_ref>(*this), nullptr);  // collectable again
  }
}

void SgAsyncQueue::StopPolling() {
  if (poll_ == nullptr) return;
  // uv_close stops the watcher (EPOLL_CTL_DEL) now, so the caller may close the fd right after;
  // the handle's memory goes in the close callback.
  uv_close(reinterpret_cast<uv_handle_t*>(poll_),
           [](uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); });
  poll_ = nullptr;
}

Napi::Value SgAsyncQueue::Close(const Napi::CallbackInfo& info) {
  Shutdown(info.Env(), ShutdownReason::kClose);
  return info.Env().Undefined();
}

Napi::Value SgAsyncQueue::GetDepth(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(depth_));
}

Napi::Value SgAsyncQueue::GetEngine(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), "sg-async");
}

void SgAsyncQueue::OnEnvCleanup(void* arg) {
  auto* queue = static_cast<SgAsyncQueue*>(arg);
  queue->Shutdown(queue->env_, ShutdownReason::kEnvCleanup);
}

void SgAsyncQueue::Shutdown(napi_env env, ShutdownReason reason) {
  if (closed_) return;
  closed_ = true;
  StopPolling();
  for (PendingCommand* command : TakeAll()) {
    std::unique_ptr<PendingCommand> owned(command);
    // Only close() may settle promises; during teardown the env frees the references itself.
    if (reason != ShutdownReason::kClose) continue;
    owned->Reject(Napi::Env(env), kQueueClosed,
                  "The SG_IO command queue was closed before this command completed.");
    owned->Unpin(env);
    if (--pending_ == 0) napi_reference_unref(env, static_cast<napi_ref>(*this), nullptr);
  }
  if (cleanup_hook_registered_) {
    cleanup_hook_registered_ = false;
    if (reason != ShutdownReason::kEnvCleanup)
      napi_remove_env_cleanup_hook(env, OnEnvCleanup, this);
  }
}

}  // namespace lba_status
