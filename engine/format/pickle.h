// A restricted reader of Python pickles: it builds a description of the objects a pickle
// describes and never runs anything.
//
// A pickle is a program for a stack machine; its GLOBAL and REDUCE opcodes name any Python
// callable and call it, which is how a malicious `pytorch_model.bin` runs code when Python
// loads it. This reader interprets only the opcodes that build plain data (see the list in
// pickle.cpp, derived from what torch.save emits with protocols 2 to 5) and accepts a GLOBAL
// only when the caller lists it. A REDUCE is not performed: it is recorded as a kCall value
// (callable, arguments) for the caller to interpret, and only a global marked callable may be
// its callable. BUILD and SETITEM(S) on a call are recorded on it too. Everything else is
// refused with the opcode (or global), its byte offset and the file named.
//
// Memory is bounded by a constant times the pickle's size: every opcode adds at most one
// object, and values on the stack and in the memo are small handles into one arena, so there is
// no reference counting, no recursion and nothing that a reference cycle could leak.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace sinkserve {

// One value on the pickle machine's stack: a scalar, or a handle to an object in the arena.
struct PickleValue {
  enum class Kind : uint8_t {
    kNone,
    kBool,           // number is 0 or 1
    kInt,            // number
    kString,         // a Python str (UTF-8 as stored) in object.text
    kBytes,          // a Python bytes in object.text
    kTuple,          // object.items
    kList,           // object.items
    kDict,           // object.entries, in insertion order (keys may repeat: the caller decides)
    kGlobal,         // object.text is "module.name"
    kPersistentId,   // BINPERSID: object.items[0] is the persistent id (torch: a tuple)
    kCall,           // REDUCE: object.items = {callable (a kGlobal), args (a kTuple)};
                     // object.entries from SETITEM(S), object.items[2] the BUILD state if any
  };
  Kind kind = Kind::kNone;
  int64_t number = 0;   // kBool, kInt
  uint32_t object = 0;  // every other kind but kNone: index into Pickle::objects
};

struct PickleObject {
  PickleValue::Kind kind = PickleValue::Kind::kNone;
  uint64_t offset = 0;  // byte offset of the opcode that made it, for messages
  std::string text;
  std::vector<PickleValue> items;
  std::vector<std::pair<PickleValue, PickleValue>> entries;
};

// The result: the value STOP returned and the arena its handles point into.
struct Pickle {
  PickleValue root;
  std::vector<PickleObject> objects;

  const PickleObject& at(const PickleValue& value) const { return objects[value.object]; }
  // "an int", "a tuple", "a call of collections.OrderedDict", ... for messages.
  std::string Describe(const PickleValue& value) const;
};

// A global the caller lets the pickle name. Only a callable one may be REDUCE's callable.
struct PickleGlobal {
  std::string_view module;
  std::string_view name;
  bool callable = false;
};

// Reads BYTES as a pickle, accepting only ALLOWED globals. NAME starts every message (the file,
// e.g. "dir/pytorch_model.bin: archive/data.pkl"). INVALID_ARGUMENT for a refused opcode or
// global or a malformed program; DATA_LOSS when it ends before STOP.
absl::StatusOr<Pickle> Unpickle(std::string_view bytes, const std::string& name,
                                std::span<const PickleGlobal> allowed);

}  // namespace sinkserve
