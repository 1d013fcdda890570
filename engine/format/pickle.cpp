// The restricted unpickler (see pickle.h).
//
// Opcodes interpreted: the ones torch.save (pickle protocol 2, its default) emits for a state
// dict, as `python -m pickletools` lists them (PROTO, EMPTY_DICT, BINPUT, MARK, BINUNICODE,
// GLOBAL, BININT1, BININT2, BININT, LONG1, TUPLE, TUPLE1..3, EMPTY_TUPLE, BINPERSID, NEWFALSE,
// NEWTRUE, REDUCE, BINGET, LONG_BINGET, LONG_BINPUT, SETITEM(S), BUILD, NONE, STOP), the data
// opcodes a state dict's metadata may need (EMPTY_LIST, APPEND(S), LIST, DICT, BINBYTES,
// SHORT_BINBYTES), and the protocol 4/5 spellings of the same things for
// torch.save(pickle_protocol=4 or 5): FRAME, MEMOIZE, SHORT_BINUNICODE, BINUNICODE8,
// STACK_GLOBAL. Nothing that builds an object by calling a class (NEWOBJ, NEWOBJ_EX, INST, OBJ),
// the extension registry (EXT1/2/4), the text opcodes of protocol 0, floats, sets and
// out-of-band buffers: torch's tensor rebuild needs none of them.
#include "engine/format/pickle.h"

#include <cstring>
#include <limits>
#include <unordered_map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/base/quote.h"

namespace sinkserve {
namespace {

using Kind = PickleValue::Kind;

// Debian's Abseil has its own string_view type, which std::string_view does not convert to.
absl::string_view Sv(std::string_view text) { return {text.data(), text.size()}; }

// Every opcode of pickle protocols 0 to 5, by name, so a refusal can say what it refused.
const char* OpcodeName(uint8_t op) {
  switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return "";
  }
}

// The pickle machine: one pass over the bytes, a stack with MARK fences, a memo.
class Machine {
 public:
  Machine(std::string_view bytes, const std::string& name, std::span<const PickleGlobal> allowed)
      : bytes_(bytes), name_(name), allowed_(allowed) {}

  absl::StatusOr<Pickle> Run() {
    while (true) {
      if (pos_ >= bytes_.size()) {
        return absl::DataLossError(absl::StrCat(
            name_, ": the pickle ends at byte ", bytes_.size(), " before its STOP opcode"));
      }
      op_offset_ = pos_;
      const auto op = static_cast<uint8_t>(bytes_[pos_++]);
      if (op == '.') {  // STOP
        PickleValue root;
        if (absl::Status status = Pop(&root); !status.ok()) return status;
        out_.root = root;
        return std::move(out_);
      }
      if (absl::Status status = Step(op); !status.ok()) return status;
    }
  }

 private:
  absl::Status Step(uint8_t op) {
    switch (op) {
      case 0x80: {  // PROTO
        uint64_t version = 0;
        if (absl::Status s = ReadUnsigned(1, &version); !s.ok()) return s;
        if (version > 5) return Fail("PROTO ", version, " is newer than pickle protocol 5");
        return absl::OkStatus();
      }
      case 0x95: {  // FRAME: a length prefix for what follows; the opcodes are read as usual
        uint64_t length = 0;
        if (absl::Status s = ReadUnsigned(8, &length); !s.ok()) return s;
        if (length > bytes_.size() - pos_) return Truncated();
        return absl::OkStatus();
      }
      case '(':  // MARK
        marks_.push_back(stack_.size());
        return absl::OkStatus();
      case 'N':  // NONE
        stack_.push_back(PickleValue{});
        return absl::OkStatus();
      case 0x88:  // NEWTRUE
      case 0x89:  // NEWFALSE
        stack_.push_back(PickleValue{Kind::kBool, op == 0x88 ? 1 : 0, 0});
        return absl::OkStatus();
      case 'K':  // BININT1
      case 'M':  // BININT2
      {
        uint64_t value = 0;
        if (absl::Status s = ReadUnsigned(op == 'K' ? 1 : 2, &value); !s.ok()) return s;
        stack_.push_back(PickleValue{Kind::kInt, static_cast<int64_t>(value), 0});
        return absl::OkStatus();
      }
      case 'J': {  // BININT: signed 32-bit
        uint64_t value = 0;
        if (absl::Status s = ReadUnsigned(4, &value); !s.ok()) return s;
        stack_.push_back(
            PickleValue{Kind::kInt, static_cast<int32_t>(static_cast<uint32_t>(value)), 0});
        return absl::OkStatus();
      }
      case 0x8a:  // LONG1: n bytes of two's complement, little-endian
        return ReadLong1();
      case 'X':     // BINUNICODE
      case 0x8c:    // SHORT_BINUNICODE
      case 0x8d:    // BINUNICODE8
      case 'B':     // BINBYTES
      case 'C': {   // SHORT_BINBYTES
        const size_t width = op == 'X' || op == 'B' ? 4 : op == 0x8d ? 8 : 1;
        uint64_t length = 0;
        if (absl::Status s = ReadUnsigned(width, &length); !s.ok()) return s;
        if (length > bytes_.size() - pos_) return Truncated();
        PickleObject& object = NewObject(op == 'B' || op == 'C' ? Kind::kBytes : Kind::kString);
        object.text.assign(bytes_.substr(pos_, length));
        pos_ += length;
        return absl::OkStatus();
      }
      case ')':  // EMPTY_TUPLE
        NewObject(Kind::kTuple);
        return absl::OkStatus();
      case 0x85:  // TUPLE1
      case 0x86:  // TUPLE2
      case 0x87:  // TUPLE3
      {
        const size_t n = op - 0x84;
        if (AboveFence() < n) return Underflow();
        std::vector<PickleValue> items(stack_.end() - n, stack_.end());
        stack_.resize(stack_.size() - n);
        NewObject(Kind::kTuple).items = std::move(items);
        return absl::OkStatus();
      }
      case 't':  // TUPLE
      case 'l':  // LIST
      {
        std::vector<PickleValue> items;
        if (absl::Status s = PopMark(&items); !s.ok()) return s;
        NewObject(op == 't' ? Kind::kTuple : Kind::kList).items = std::move(items);
        return absl::OkStatus();
      }
      case ']':  // EMPTY_LIST
        NewObject(Kind::kList);
        return absl::OkStatus();
      case '}':  // EMPTY_DICT
        NewObject(Kind::kDict);
        return absl::OkStatus();
      case 'd': {  // DICT
        std::vector<PickleValue> items;
        if (absl::Status s = PopMark(&items); !s.ok()) return s;
        if (items.size() % 2 != 0) return Fail("DICT with an odd number of items");
        PickleObject& dict = NewObject(Kind::kDict);
        for (size_t i = 0; i < items.size(); i += 2) dict.entries.emplace_back(items[i], items[i + 1]);
        return absl::OkStatus();
      }
      case 'a':  // APPEND
      case 'e':  // APPENDS
      {
        std::vector<PickleValue> items(1);
        if (absl::Status s = op == 'a' ? Pop(&items[0]) : PopMark(&items); !s.ok()) return s;
        PickleObject* list = nullptr;
        if (absl::Status s = Top(Kind::kList, Kind::kList, &list); !s.ok()) return s;
        list->items.insert(list->items.end(), items.begin(), items.end());
        return absl::OkStatus();
      }
      case 's':  // SETITEM
      case 'u':  // SETITEMS
      {
        std::vector<PickleValue> items(2);
        absl::Status s = op == 's' ? PopInto(&items[1], &items[0]) : PopMark(&items);
        if (!s.ok()) return s;
        if (items.size() % 2 != 0) return Fail("SETITEMS with an odd number of items");
        PickleObject* dict = nullptr;
        if (absl::Status t = Top(Kind::kDict, Kind::kCall, &dict); !t.ok()) return t;
        for (size_t i = 0; i < items.size(); i += 2) dict->entries.emplace_back(items[i], items[i + 1]);
        return absl::OkStatus();
      }
      case 'c':  // GLOBAL: "module\nname\n"
      {
        std::string_view module, name;
        if (absl::Status s = ReadLine(&module); !s.ok()) return s;
        if (absl::Status s = ReadLine(&name); !s.ok()) return s;
        return PushGlobal(module, name);
      }
      case 0x93: {  // STACK_GLOBAL: module and name are strings on the stack
        PickleValue module, name;
        if (absl::Status s = PopInto(&name, &module); !s.ok()) return s;
        if (module.kind != Kind::kString || name.kind != Kind::kString) {
          return Fail("STACK_GLOBAL needs two strings, got ", out_.Describe(module), " and ",
                      out_.Describe(name));
        }
        // Copied: PushGlobal grows the arena the views would point into.
        const std::string module_text = out_.at(module).text, name_text = out_.at(name).text;
        return PushGlobal(module_text, name_text);
      }
      case 'Q': {  // BINPERSID
        PickleValue id;
        if (absl::Status s = Pop(&id); !s.ok()) return s;
        NewObject(Kind::kPersistentId).items = {id};
        return absl::OkStatus();
      }
      case 'R': {  // REDUCE: recorded, never performed
        PickleValue callable, args;
        if (absl::Status s = PopInto(&args, &callable); !s.ok()) return s;
        if (callable.kind != Kind::kGlobal || !callable_[callable.object]) {
          return Fail("REDUCE calls ", out_.Describe(callable),
                      ", which is not a callable this reader allows");
        }
        if (args.kind != Kind::kTuple) {
          return Fail("REDUCE of ", out_.Describe(callable), " with ", out_.Describe(args),
                      " for arguments (expected a tuple)");
        }
        NewObject(Kind::kCall).items = {callable, args};
        return absl::OkStatus();
      }
      case 'b': {  // BUILD: the state is recorded on the call it applies to
        PickleValue state;
        if (absl::Status s = Pop(&state); !s.ok()) return s;
        PickleObject* call = nullptr;
        if (absl::Status s = Top(Kind::kCall, Kind::kCall, &call); !s.ok()) return s;
        if (call->items.size() != 2) return Fail("a second BUILD of the same object");
        call->items.push_back(state);
        return absl::OkStatus();
      }
      case 'q':     // BINPUT
      case 'r':     // LONG_BINPUT
      case 0x94: {  // MEMOIZE
        uint64_t index = memo_.size();
        if (op != 0x94) {
          if (absl::Status s = ReadUnsigned(op == 'q' ? 1 : 4, &index); !s.ok()) return s;
        }
        if (AboveFence() == 0) return Underflow();
        memo_[index] = stack_.back();
        return absl::OkStatus();
      }
      case 'h':  // BINGET
      case 'j':  // LONG_BINGET
      {
        uint64_t index = 0;
        if (absl::Status s = ReadUnsigned(op == 'h' ? 1 : 4, &index); !s.ok()) return s;
        const auto it = memo_.find(index);
        if (it == memo_.end()) return Fail(OpcodeName(op), " of memo entry ", index, ", never put");
        stack_.push_back(it->second);
        return absl::OkStatus();
      }
      default:
        break;
    }
    const char* known = OpcodeName(op);
    if (*known == '\0') {
      return Fail("unknown opcode 0x", absl::Hex(op, absl::kZeroPad2),
                  " (not a pickle, or a corrupt one)");
    }
    return Fail("opcode ", known, " (0x", absl::Hex(op, absl::kZeroPad2),
                ") is not one that torch's tensor rebuild needs; refused without running it");
  }

  template <typename... Parts>
  absl::Status Fail(const Parts&... parts) const {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": pickle byte ", op_offset_, ": ", parts...));
  }
  absl::Status Truncated() const {
    return absl::DataLossError(absl::StrCat(name_, ": pickle byte ", op_offset_, ": ",
                                            OpcodeName(static_cast<uint8_t>(bytes_[op_offset_])),
                                            " runs past the end of the ", bytes_.size(),
                                            "-byte pickle"));
  }
  absl::Status Underflow() const {
    return Fail(OpcodeName(static_cast<uint8_t>(bytes_[op_offset_])),
                " needs more values than the stack holds above its last MARK");
  }

  absl::Status ReadUnsigned(size_t width, uint64_t* value) {
    if (width > bytes_.size() - pos_) return Truncated();
    *value = 0;
    for (size_t i = 0; i < width; ++i) {
      *value |= static_cast<uint64_t>(static_cast<uint8_t>(bytes_[pos_ + i])) << (8 * i);
    }
    pos_ += width;
    return absl::OkStatus();
  }

  absl::Status ReadLong1() {
    uint64_t width = 0;
    if (absl::Status s = ReadUnsigned(1, &width); !s.ok()) return s;
    if (width > 8) return Fail("LONG1 of ", width, " bytes: an integer wider than 64 bits");
    uint64_t bits = 0;
    if (absl::Status s = ReadUnsigned(width, &bits); !s.ok()) return s;
    if (width > 0 && width < 8 && (bits >> (8 * width - 1)) != 0) {
      bits |= ~uint64_t{0} << (8 * width);  // sign-extend
    }
    stack_.push_back(PickleValue{Kind::kInt, static_cast<int64_t>(bits), 0});
    return absl::OkStatus();
  }

  absl::Status ReadLine(std::string_view* line) {
    const size_t end = bytes_.find('\n', pos_);
    if (end == std::string_view::npos) return Truncated();
    *line = bytes_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return absl::OkStatus();
  }

  absl::Status PushGlobal(std::string_view module, std::string_view name) {
    for (const PickleGlobal& global : allowed_) {
      if (global.module == module && global.name == name) {
        NewObject(Kind::kGlobal).text = absl::StrCat(Sv(module), ".", Sv(name));
        callable_.resize(out_.objects.size());
        callable_.back() = global.callable;
        return absl::OkStatus();
      }
    }
    return Fail("global ", Quote(absl::StrCat(Sv(module), ".", Sv(name))),
                " is not one that torch's tensor rebuild needs; refused without running it "
                "(a pickle that names other globals can run code when Python loads it)");
  }

  // Adds an object to the arena and pushes a handle to it.
  PickleObject& NewObject(Kind kind) {
    PickleObject& object = out_.objects.emplace_back();
    object.kind = kind;
    object.offset = op_offset_;
    stack_.push_back(PickleValue{kind, 0, static_cast<uint32_t>(out_.objects.size() - 1)});
    return object;
  }

  size_t AboveFence() const { return stack_.size() - (marks_.empty() ? 0 : marks_.back()); }

  absl::Status Pop(PickleValue* value) {
    if (AboveFence() == 0) return Underflow();
    *value = stack_.back();
    stack_.pop_back();
    return absl::OkStatus();
  }
  // Pops the top into FIRST and the one below it into SECOND.
  absl::Status PopInto(PickleValue* first, PickleValue* second) {
    if (AboveFence() < 2) return Underflow();
    *first = stack_.back();
    *second = stack_[stack_.size() - 2];
    stack_.resize(stack_.size() - 2);
    return absl::OkStatus();
  }
  // Pops everything above the last MARK, and the MARK.
  absl::Status PopMark(std::vector<PickleValue>* items) {
    if (marks_.empty()) return Fail(OpcodeName(static_cast<uint8_t>(bytes_[op_offset_])), " without a MARK");
    const size_t mark = marks_.back();
    marks_.pop_back();
    items->assign(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return absl::OkStatus();
  }
  // The object on top of the stack, which must be of kind A or B.
  absl::Status Top(Kind a, Kind b, PickleObject** object) {
    if (AboveFence() == 0) return Underflow();
    const PickleValue& top = stack_.back();
    if (top.kind != a && top.kind != b) {
      return Fail(OpcodeName(static_cast<uint8_t>(bytes_[op_offset_])), " applied to ",
                  out_.Describe(top));
    }
    *object = &out_.objects[top.object];
    return absl::OkStatus();
  }

  std::string_view bytes_;
  const std::string& name_;
  std::span<const PickleGlobal> allowed_;
  size_t pos_ = 0;
  size_t op_offset_ = 0;
  std::vector<PickleValue> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValue> memo_;
  std::vector<bool> callable_;  // per arena object: a global REDUCE may call
  Pickle out_;
};

}  // namespace

std::string Pickle::Describe(const PickleValue& value) const {
  switch (value.kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return value.number != 0 ? "True" : "False";
    case Kind::kInt: return absl::StrCat("the int ", value.number);
    case Kind::kString: return absl::StrCat("the string ", Quote(at(value).text));
    case Kind::kBytes: return "a bytes object";
    case Kind::kTuple: return absl::StrCat("a tuple of ", at(value).items.size());
    case Kind::kList: return "a list";
    case Kind::kDict: return "a dict";
    case Kind::kGlobal: return absl::StrCat("the global ", at(value).text);
    case Kind::kPersistentId: return "a persistent id";
    case Kind::kCall: return absl::StrCat("a call of ", at(at(value).items[0]).text);
  }
  return "?";
}

absl::StatusOr<Pickle> Unpickle(std::string_view bytes, const std::string& name,
                                std::span<const PickleGlobal> allowed) {
  return Machine(bytes, name, allowed).Run();
}

}  // namespace sinkserve
