// SPDX-License-Identifier: Apache-2.0
//
// Argument guards for the addon's entry points. The TypeScript layer validates user input once,
// in Node's vocabulary; these checks only make direct misuse of the binding throw a TypeError or
// RangeError (with Node-style `code`s) instead of crashing or reading out of bounds.
//
// See: sg(4), ioctl(2).

#ifndef LBA_STATUS_NATIVE_JS_ARGS_H_
#define LBA_STATUS_NATIVE_JS_ARGS_H_

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace lba_status {

// A borrowed view of the bytes of a TypedArray or DataView (byteOffset and byteLength honoured).
struct ByteView {
  Napi::Object holder;  // the view itself; referencing it keeps its ArrayBuffer alive
  uint8_t* data = nullptr;
  size_t length = 0;
};

// Throws TypeError (ERR_INVALID_ARG_TYPE) unless value is a TypedArray or DataView.
ByteView GetByteView(const Napi::Value& value, const char* name);

// Throws TypeError unless value is a number, RangeError (ERR_OUT_OF_RANGE) unless it is an
// integer in [min, max]. max must not exceed 2^53 - 1.
int64_t GetInteger(const Napi::Value& value, const char* name, int64_t min, int64_t max);

// Throws TypeError unless value is a bigint, RangeError unless it is in [0, 2^64 - 1].
uint64_t GetUint64BigInt(const Napi::Value& value, const char* name);

// Builders for errors that carry a Node-style `code` property.
Napi::Error MakeTypeError(Napi::Env env, const std::string& message);
Napi::Error MakeRangeError(Napi::Env env, const std::string& message);
Napi::Error MakeError(Napi::Env env, const char* code, const std::string& message);

// "type string", "an instance of Array", "bigint 5n"... for "Received ..." message tails.
std::string DescribeReceived(const Napi::Value& value);

}  // namespace lba_status

#endif  // LBA_STATUS_NATIVE_JS_ARGS_H_
