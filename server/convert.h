// Engine types to sinkserve.v1 messages (the other direction is validation.h).
#pragma once

#include "engine/serving/scheduler.h"
#include "sinkserve/v1/sinkserve.pb.h"

namespace sinkserve::server {

void ToProto(const CachePolicy& policy, v1::CachePolicy* out);
void ToProto(const SamplingOverrides& sampling, v1::SamplingParams* out);
void ToProto(const SessionInfo& session, v1::Session* out);
v1::FinishReason ToProto(FinishReason reason);
void ToProto(const GenerateResult& result, v1::GenerateResult* out);
void ToProto(const ScoreResult& result, v1::ScoreResult* out);

}  // namespace sinkserve::server
