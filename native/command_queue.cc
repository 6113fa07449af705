// SPDX-License-Identifier: Apache-2.0
//
// CommandQueue implementation (see command_queue.h). Threading rules:
// - JS thread: argument checks, pinning (napi references), promise creation and settlement,
//   ref/unref of the thread-safe function, close().
// - Worker threads: pop a job, RunSgIo, post the job back. They never touch a napi_value.
// Signals are blocked on the worker threads, so the process's signals go to the JS thread and
// never interrupt an SG_IO in progress.
//
// See: sg(4), ioctl(2), pthread_sigmask(3).

#include "command_queue.h"

#include <pthread.h>
#include <signal.h>

#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "js_args.h"
#include "pending_command.h"
#include "sg_io.h"

namespace lba_status {

namespace {

constexpr const char* kQueueClosed = "ERR_LBA_STATUS_QUEUE_CLOSED";

}  // namespace

Napi::Function CommandQueue::Init(Napi::Env env) {
  return ObjectWrap<CommandQueue>::DefineClass(
      env, "CommandQueue",
      {
          InstanceMethod<&CommandQueue::Execute>("execute"),
          InstanceMethod<&CommandQueue::Close>("close"),
          InstanceAccessor<&CommandQueue::GetThreads>("threads"),
          InstanceAccessor<&CommandQueue::GetThreads>("depth"),
          InstanceAccessor<&CommandQueue::GetEngine>("engine"),
      });
}

CommandQueue::CommandQueue(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<CommandQueue>(info), env_(info.Env()) {
  Napi::Env env = info.Env();
  const int64_t threads = GetInteger(info[0], "threads", kMinThreads, kMaxThreads);

  // Unlimited queue (0): NonBlockingCall never fails with napi_queue_full. One initial "thread"
  // is the JS thread itself; it releases the function in Shutdown, after the workers are joined,
  // so workers may call it without Acquire().
  completions_ = Completions::New(env, "lba-status:sg_io", 0, 1, this);
  // An idle queue must not keep the process alive; Execute refs it while commands are pending.
  completions_.Unref(env);

  try {
    StartThreads(static_cast<size_t>(threads));
  } catch (const std::exception& error) {  // std::system_error, std::bad_alloc
    Shutdown(env, ShutdownReason::kDestructor);
    throw MakeError(env, "ERR_LBA_STATUS_THREAD",
                    std::string("Could not start the SG_IO threads: ") + error.what() +
                        ". Use fewer threads or raise the process thread limit.");
  }

  // Registered after the thread-safe function: hooks run in reverse order, so this one runs
  // (and joins the workers) while the function is still open.
  if (napi_add_env_cleanup_hook(env, OnEnvCleanup, this) == napi_ok) {
    cleanup_hook_registered_ = true;
  }
}

CommandQueue::~CommandQueue() {
  // Pending commands hold a strong reference to this object, so the destructor only runs when
  // the queue is idle or the environment is being torn down.
  Shutdown(env_, ShutdownReason::kDestructor);
}

void CommandQueue::StartThreads(size_t count) {
  // Threads inherit the creator's signal mask: block everything while creating them.
  sigset_t all;
  sigset_t previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  try {
    threads_.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      threads_.emplace_back([this] { WorkerLoop(); });
      pthread_setname_np(threads_.back().native_handle(), "lba-status-sg");
    }
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  thread_count_ = count;
}

void CommandQueue::WorkerLoop() {
  for (;;) {
    PendingCommand* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;  // jobs still queued are settled by Shutdown on the JS thread
      job = queue_.front();
      queue_.pop_front();
    }
    job->outcome = RunSgIo(job->request);
    // Cannot fail: the queue is unbounded and the function is released only after every
    // worker has been joined. If it ever did, leaking the job is the only safe choice (its
    // references may be dropped on the JS thread only).
    completions_.NonBlockingCall(job);
  }
}

void CommandQueue::DeliverCompletion(Napi::Env env, Napi::Function /*unused*/, CommandQueue* queue,
                                     PendingCommand* job) {
  std::unique_ptr<PendingCommand> owned(job);
  // A null env means the environment is being torn down: nothing may be called; the env frees
  // the references itself.
  if (static_cast<napi_env>(env) == nullptr) return;
  owned->Resolve(env);
  owned->Unpin(env);
  queue->Settled(env);
}

void CommandQueue::Settled(Napi::Env env) {
  // Raw calls: these cannot fail on a live env, and must not throw while a worker_thread is
  // being terminated.
  if (--pending_ == 0) {
    if (!completions_released_) napi_unref_threadsafe_function(env, completions_);
    napi_reference_unref(env, static_cast<napi_ref>(*this), nullptr);  // collectable again
  }
}

Napi::Value CommandQueue::Execute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<PendingCommand>(env);
  Napi::Promise promise = job->deferred.Promise();
  if (closed_) {
    job->Reject(env, kQueueClosed, "The SG_IO command queue is closed; open the device again.");
    return promise;
  }
  try {
    job->ReadArguments(info);
  } catch (const Napi::Error& error) {
    job->Reject(error);
    return promise;
  }

  if (pending_++ == 0) {
    napi_ref_threadsafe_function(env, completions_);  // a pending command keeps the loop alive
    napi_reference_ref(env, static_cast<napi_ref>(*this), nullptr);  // and this wrapper
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(job.release());
  }
  wake_.notify_one();
  return promise;
}

Napi::Value CommandQueue::Close(const Napi::CallbackInfo& info) {
  Shutdown(info.Env(), ShutdownReason::kClose);
  return info.Env().Undefined();
}

Napi::Value CommandQueue::GetThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(thread_count_));
}

Napi::Value CommandQueue::GetEngine(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), "threads");
}

void CommandQueue::OnEnvCleanup(void* arg) {
  auto* queue = static_cast<CommandQueue*>(arg);
  queue->Shutdown(queue->env_, ShutdownReason::kEnvCleanup);
}

void CommandQueue::Shutdown(napi_env env, ShutdownReason reason) {
  if (closed_) return;
  closed_ = true;

  std::deque<PendingCommand*> unsent;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    unsent.swap(queue_);
  }
  wake_.notify_all();
  // A worker inside an ioctl finishes it first (bounded by the command's timeout); its
  // completion is already posted and will still be delivered.
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  threads_.clear();

  for (PendingCommand* job : unsent) {
    std::unique_ptr<PendingCommand> owned(job);
    // Only close() may settle promises; during teardown (or from a finalizer, where no command
    // can be pending) the jobs are dropped and the env frees their references.
    if (reason != ShutdownReason::kClose) continue;
    owned->Reject(Napi::Env(env), kQueueClosed,
                  "The SG_IO command queue was closed before this command was sent.");
    owned->Unpin(env);
    Settled(Napi::Env(env));
  }

  if (!completions_released_) {
    completions_released_ = true;
    completions_.Release();
  }
  if (cleanup_hook_registered_) {
    cleanup_hook_registered_ = false;
    if (reason != ShutdownReason::kEnvCleanup) {
      napi_remove_env_cleanup_hook(env, OnEnvCleanup, this);
    }
  }
}

}  // namespace lba_status
