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
#include "sg_io.h"

namespace lba_status {

namespace {

constexpr size_t kMinCdbLength = 6;
constexpr size_t kMaxCdbLength = 32;  // Linux rejects longer CDBs with EINVAL since 5.18
constexpr size_t kMinSenseLength = 18;
constexpr int64_t kMaxFd = 0x7fffffff;
constexpr int64_t kMaxUint32 = 0xffffffff;
constexpr const char* kQueueClosed = "ERR_LBA_STATUS_QUEUE_CLOSED";

void DeleteReference(napi_env env, napi_ref* ref) {
  if (*ref != nullptr) {
    napi_delete_reference(env, *ref);
    *ref = nullptr;
  }
}

}  // namespace

struct CommandQueue::Job {
  explicit Job(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise::Deferred deferred;
  uint8_t cdb[kMaxCdbLength] = {};  // copied: the caller may reuse its CDB buffer at once
  SgRequest request;
  napi_ref data_ref = nullptr;   // pins the data view (and its ArrayBuffer) until settled
  napi_ref sense_ref = nullptr;  // pins the sense view until settled
  SgOutcome outcome;

  // Drops the pins. Only on the JS thread with a live env.
  void Unpin(napi_env env) {
    DeleteReference(env, &data_ref);
    DeleteReference(env, &sense_ref);
  }
};

Napi::Function CommandQueue::Init(Napi::Env env) {
  return ObjectWrap<CommandQueue>::DefineClass(
      env, "CommandQueue",
      {
          InstanceMethod<&CommandQueue::Execute>("execute"),
          InstanceMethod<&CommandQueue::Close>("close"),
          InstanceAccessor<&CommandQueue::GetThreads>("threads"),
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
    Job* job = nullptr;
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
                                     Job* job) {
  std::unique_ptr<Job> owned(job);
  // A null env means the environment is being torn down: nothing may be called; the env frees
  // the references itself.
  if (static_cast<napi_env>(env) == nullptr) return;
  try {
    const SgOutcome& outcome = owned->outcome;
    Napi::Object result = Napi::Object::New(env);
    result.Set("errno", Napi::Number::New(env, outcome.errno_value));
    result.Set("status", Napi::Number::New(env, outcome.status));
    result.Set("hostStatus", Napi::Number::New(env, outcome.host_status));
    result.Set("driverStatus", Napi::Number::New(env, outcome.driver_status));
    result.Set("senseLength", Napi::Number::New(env, outcome.sense_length));
    result.Set("resid", Napi::Number::New(env, outcome.resid));
    result.Set("durationMs", Napi::Number::New(env, outcome.duration_ms));
    result.Set("info", Napi::Number::New(env, outcome.info));
    owned->deferred.Resolve(result);
  } catch (...) {
    // Only possible while a worker_thread is being terminated; nobody can observe the promise.
  }
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
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  Napi::Promise promise = deferred.Promise();
  if (closed_) {
    deferred.Reject(
        MakeError(env, kQueueClosed, "The SG_IO command queue is closed; open the device again.")
            .Value());
    return promise;
  }

  auto job = std::make_unique<Job>(env);
  job->deferred = deferred;
  ByteView data;
  ByteView sense;
  bool has_data = false;
  try {
    SgRequest& request = job->request;
    request.fd = static_cast<int>(GetInteger(info[0], "fd", 0, kMaxFd));

    ByteView cdb = GetByteView(info[1], "cdb");
    if (cdb.length < kMinCdbLength || cdb.length > kMaxCdbLength) {
      throw MakeRangeError(env, "The \"cdb\" argument must be 6 to 32 bytes long. Received " +
                                    std::to_string(cdb.length) + " bytes");
    }
    std::copy(cdb.data, cdb.data + cdb.length, job->cdb);
    request.cdb = job->cdb;
    request.cdb_length = cdb.length;

    request.direction = static_cast<SgDirection>(GetInteger(info[2], "direction", 0, 2));

    has_data = !info[3].IsNull() && !info[3].IsUndefined();
    if (has_data) data = GetByteView(info[3], "data");
    if (request.direction == SgDirection::kNone && has_data) {
      throw MakeTypeError(env,
                          "The \"data\" argument must be null when direction is None (0). "
                          "Received " +
                              DescribeReceived(info[3]));
    }
    if (request.direction != SgDirection::kNone && !has_data) {
      throw MakeTypeError(env,
                          "The \"data\" argument must be a Uint8Array when direction is "
                          "FromDevice (1) or ToDevice (2). Received " +
                              DescribeReceived(info[3]));
    }
    if (data.length > static_cast<size_t>(kMaxUint32)) {
      throw MakeRangeError(env, "The \"data\" argument must be at most 4294967295 bytes long");
    }
    request.data = data.data;
    request.data_length = data.length;

    sense = GetByteView(info[4], "sense");
    if (sense.length < kMinSenseLength) {
      throw MakeRangeError(env, "The \"sense\" argument must be at least 18 bytes long. Received " +
                                    std::to_string(sense.length) + " bytes");
    }
    request.sense = sense.data;
    request.sense_length = sense.length;

    request.timeout_ms = static_cast<uint32_t>(GetInteger(info[5], "timeoutMs", 0, kMaxUint32));
  } catch (const Napi::Error& error) {
    deferred.Reject(error.Value());
    return promise;
  }

  // Pin the views: a referenced view keeps its ArrayBuffer alive, so the raw pointers taken
  // above stay valid until the job is settled (the caller must not detach/transfer them).
  if ((has_data && napi_create_reference(env, data.holder, 1, &job->data_ref) != napi_ok) ||
      napi_create_reference(env, sense.holder, 1, &job->sense_ref) != napi_ok) {
    job->Unpin(env);
    deferred.Reject(MakeError(env, "ERR_LBA_STATUS_INTERNAL", "Could not pin the buffers").Value());
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

void CommandQueue::OnEnvCleanup(void* arg) {
  auto* queue = static_cast<CommandQueue*>(arg);
  queue->Shutdown(queue->env_, ShutdownReason::kEnvCleanup);
}

void CommandQueue::Shutdown(napi_env env, ShutdownReason reason) {
  if (closed_) return;
  closed_ = true;

  std::deque<Job*> unsent;
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

  for (Job* job : unsent) {
    std::unique_ptr<Job> owned(job);
    // Only close() may settle promises; during teardown (or from a finalizer, where no command
    // can be pending) the jobs are dropped and the env frees their references.
    if (reason != ShutdownReason::kClose) continue;
    try {
      owned->deferred.Reject(MakeError(Napi::Env(env), kQueueClosed,
                                       "The SG_IO command queue was closed before this command "
                                       "was sent.")
                                 .Value());
    } catch (...) {
    }
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
