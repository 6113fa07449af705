// SPDX-License-Identifier: Apache-2.0
//
// Argument guards for the addon's entry points (see js_args.h).
// See: sg(4), ioctl(2).

#include "js_args.h"

#include <cmath>
#include <cstdio>
#include <string>

namespace lba_status {

namespace {

Napi::Error WithCode(Napi::Error error, const char* code) {
  error.Set("code", Napi::String::New(error.Env(), code));
  return error;
}

std::string TypeName(const Napi::Value& value) {
  switch (value.Type()) {
    case napi_undefined:
      return "undefined";
    case napi_null:
      return "null";
    case napi_boolean:
      return "boolean";
    case napi_number:
      return "number";
    case napi_string:
      return "string";
    case napi_symbol:
      return "symbol";
    case napi_object:
      return "object";
    case napi_function:
      return "function";
    case napi_external:
      return "external";
    case napi_bigint:
      return "bigint";
  }
  return "unknown";
}

std::string FormatNumber(double value) {
  if (std::isfinite(value) && std::trunc(value) == value &&
      std::fabs(value) < 9.007199254740992e15) {
    return std::to_string(static_cast<int64_t>(value));
  }
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.17g", value);
  return buffer;
}

}  // namespace

std::string DescribeReceived(const Napi::Value& value) {
  switch (value.Type()) {
    case napi_undefined:
    case napi_null:
      return TypeName(value);
    case napi_number:
      return "type number (" + FormatNumber(value.As<Napi::Number>().DoubleValue()) + ")";
    case napi_object:
      if (value.IsArray()) return "an instance of Array";
      if (value.IsArrayBuffer()) return "an instance of ArrayBuffer";
      return "an object";
    default:
      return "type " + TypeName(value);
  }
}

Napi::Error MakeTypeError(Napi::Env env, const std::string& message) {
  return WithCode(Napi::TypeError::New(env, message), "ERR_INVALID_ARG_TYPE");
}

Napi::Error MakeRangeError(Napi::Env env, const std::string& message) {
  return WithCode(Napi::RangeError::New(env, message), "ERR_OUT_OF_RANGE");
}

Napi::Error MakeError(Napi::Env env, const char* code, const std::string& message) {
  return WithCode(Napi::Error::New(env, message), code);
}

ByteView GetByteView(const Napi::Value& value, const char* name) {
  Napi::Env env = value.Env();
  ByteView view;
  if (value.IsTypedArray()) {
    Napi::TypedArray typed = value.As<Napi::TypedArray>();
    Napi::ArrayBuffer buffer = typed.ArrayBuffer();
    view.holder = typed;
    view.length = typed.ByteLength();
    view.data =
        view.length == 0 ? nullptr : static_cast<uint8_t*>(buffer.Data()) + typed.ByteOffset();
    return view;
  }
  if (value.IsDataView()) {
    Napi::DataView data_view = value.As<Napi::DataView>();
    view.holder = data_view;
    view.length = data_view.ByteLength();
    view.data = view.length == 0 ? nullptr : static_cast<uint8_t*>(data_view.Data());
    return view;
  }
  throw MakeTypeError(env, std::string("The \"") + name +
                               "\" argument must be a Uint8Array (or another ArrayBufferView). "
                               "Received " +
                               DescribeReceived(value));
}

int64_t GetInteger(const Napi::Value& value, const char* name, int64_t min, int64_t max) {
  Napi::Env env = value.Env();
  if (!value.IsNumber()) {
    throw MakeTypeError(env, std::string("The \"") + name +
                                 "\" argument must be of type number. Received " +
                                 DescribeReceived(value));
  }
  const double number = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(number) || std::trunc(number) != number || number < static_cast<double>(min) ||
      number > static_cast<double>(max)) {
    throw MakeRangeError(env, std::string("The value of \"") + name + "\" is out of range. " +
                                  "It must be an integer >= " + std::to_string(min) + " and <= " +
                                  std::to_string(max) + ". Received " + FormatNumber(number));
  }
  return static_cast<int64_t>(number);
}

uint64_t GetUint64BigInt(const Napi::Value& value, const char* name) {
  Napi::Env env = value.Env();
  if (!value.IsBigInt()) {
    throw MakeTypeError(env, std::string("The \"") + name +
                                 "\" argument must be of type bigint. Received " +
                                 DescribeReceived(value));
  }
  bool lossless = false;
  const uint64_t result = value.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) {
    throw MakeRangeError(env, std::string("The value of \"") + name +
                                  "\" is out of range. It must be >= 0n and <= "
                                  "18446744073709551615n (2^64 - 1).");
  }
  return result;
}

}  // namespace lba_status
