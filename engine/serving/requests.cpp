#include "engine/serving/requests.h"

namespace sinkserve {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kFinishReasonStop:
      return "stop";
    case FinishReason::kFinishReasonLength:
      return "length";
    case FinishReason::kFinishReasonCancelled:
      return "cancelled";
    case FinishReason::kFinishReasonError:
      return "error";
  }
  return "unknown";
}

}  // namespace sinkserve
