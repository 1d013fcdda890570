// The scheduler's engine step: chunked prefill, one batched forward over every single-token
// row, sampling, token events and request completion (see scheduler.h for the design).
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/perplexity.h"
#include "engine/serving/scheduler.h"
#include "engine/serving/scheduler_job.h"

namespace sinkserve {
namespace {

double Seconds(SteadyClock::duration duration) {
  return std::chrono::duration<double>(duration).count();
}

RequestTimings MakeTimings(SteadyClock::time_point arrival, SteadyClock::time_point admitted,
                           SteadyClock::time_point first_token, SteadyClock::time_point last_token,
                           int64_t generated, double attention_seconds,
                           SteadyClock::time_point now) {
  RequestTimings timings;
  timings.queue_seconds = admitted >= arrival ? Seconds(admitted - arrival) : 0.0;
  timings.time_to_first_token_seconds = generated > 0 ? Seconds(first_token - arrival) : 0.0;
  timings.time_per_output_token_seconds =
      generated > 1 ? Seconds(last_token - first_token) / static_cast<double>(generated - 1) : 0.0;
  timings.attention_seconds = attention_seconds;
  timings.e2e_seconds = Seconds(now - arrival);
  return timings;
}

}  // namespace

void Scheduler::Step() {
  stat_steps_.fetch_add(1, std::memory_order_relaxed);
  rows_.clear();
  int budget = options_.prefill_chunk_tokens;
  for (auto& owned : running_) {
    Job& job = *owned;
    if (job.finished) continue;
    KvCache& cache = job.session->cache();
    const int max_step = cache.MaxStepTokens();
    if (GenerateJob* decoder = job.decoding()) {
      if (max_step < 1) {
        FinishGenerate(*decoder, FinishReason::kFinishReasonLength, absl::OkStatus(),
                       absl::StrCat("dense cache full (", cache.capacity_tokens(), " tokens)"));
      } else {
        rows_.push_back({&job, decoder, decoder->next_token});
      }
      continue;
    }
    if (max_step < 1) {  // admission checked the room; a bug if reached
      Fail(job, FinishReason::kFinishReasonError, absl::OutOfRangeError("the dense cache is full"));
      continue;
    }
    int tokens = static_cast<int>(std::min<size_t>(job.to_feed.size() - job.fed, max_step));
    if (tokens > 1) tokens = std::min(tokens, std::max(budget, 1));
    if (tokens == 1) {
      // One exact token: a row of the batched step like any decode.
      rows_.push_back({&job, nullptr, job.to_feed[job.fed]});
    } else {
      budget -= tokens;
      RunChunk(job, tokens);
    }
  }
  if (!rows_.empty()) RunBatch();
  std::erase_if(running_, [](const auto& job) { return job->finished; });
  running_count_.store(static_cast<int>(running_.size()));
}

void Scheduler::RunChunk(Job& job, int tokens) {
  Backend& backend = model_.backend();
  KvCache& cache = job.session->cache();
  const std::span<const int32_t> chunk(job.to_feed.data() + job.fed, tokens);
  // Score needs every token's logits; Generate only the last one's.
  const std::span<float> logits(
      chunk_logits_.data(),
      static_cast<size_t>(job.needs_every_logit() ? tokens : 1) * vocab_size_);
  const int64_t evicted_before = cache.tokens_evicted();
  const absl::Status status = backend.Forward(chunk, cache, logits, job.needs_every_logit());
  const double attention = backend.last_step_attention_seconds();
  stat_prefill_chunks_.fetch_add(1, std::memory_order_relaxed);
  if (listener_) {
    listener_->OnForward(StepPhase::kStepPhasePrefill, 1, tokens, attention);
    ReportEvicted(job, cache.tokens_evicted() - evicted_before);
  }
  if (!status.ok()) {
    Fail(job, FinishReason::kFinishReasonError, status);
    return;
  }
  AfterFed(job, tokens, logits, attention);
}

void Scheduler::RunBatch() {
  Backend& backend = model_.backend();
  const size_t rows = rows_.size();
  row_tokens_.clear();
  row_caches_.clear();
  row_evicted_.clear();
  bool any_decode = false;
  for (const Row& row : rows_) {
    row_tokens_.push_back(row.token);
    row_caches_.push_back(&row.job->session->cache());
    row_evicted_.push_back(row.job->session->cache().tokens_evicted());
    any_decode |= row.decoder != nullptr;
  }
  // All rows plain greedy decodes: the backend may take the argmax itself (on the device). The
  // same token as Sampler's greedy choice: the first maximum.
  const bool greedy = std::all_of(rows_.begin(), rows_.end(), [](const Row& row) {
    const GenerateJob* job = row.decoder;
    return job != nullptr && !job->spec.return_logprobs &&
           job->sampler->params().temperature == 0.0f &&
           job->sampler->params().repetition_penalty == 1.0f;
  });
  const std::span<float> logits(batch_logits_.data(), rows * vocab_size_);
  row_next_.resize(rows);
  const absl::Status status =
      greedy ? backend.ForwardBatchGreedy(row_tokens_, row_caches_, logits, row_next_)
             : backend.ForwardBatch(row_tokens_, row_caches_, logits);
  const double attention = backend.last_step_attention_seconds();
  stat_batch_calls_.fetch_add(1, std::memory_order_relaxed);
  stat_batch_rows_.fetch_add(rows, std::memory_order_relaxed);
  if (rows > stat_max_batch_rows_.load(std::memory_order_relaxed)) {
    stat_max_batch_rows_.store(rows, std::memory_order_relaxed);
  }
  if (listener_) {
    listener_->OnForward(any_decode ? StepPhase::kStepPhaseDecode : StepPhase::kStepPhasePrefill,
                         static_cast<int>(rows), static_cast<int>(rows), attention);
    for (size_t i = 0; i < rows; ++i) {
      ReportEvicted(*rows_[i].job, row_caches_[i]->tokens_evicted() - row_evicted_[i]);
    }
  }
  const double share = attention / static_cast<double>(rows);
  if (!status.ok()) {
    for (const Row& row : rows_) Fail(*row.job, FinishReason::kFinishReasonError, status);
    return;
  }
  // Decoding rows: the fed token joins the history (the repetition penalty's), then the rows
  // that sample choose their tokens in parallel (each job's sampler is its own), then every
  // row's token is emitted in row order.
  sampled_rows_.clear();
  for (size_t i = 0; i < rows; ++i) {
    GenerateJob* job = rows_[i].decoder;
    if (job == nullptr) continue;
    job->attention_seconds += share;
    job->session->Record(job->next_token);
    if (!greedy) sampled_rows_.push_back(i);
  }
  row_chosen_.resize(rows);
  sampling_pool_.ParallelFor(
      static_cast<int64_t>(sampled_rows_.size()), 1, [&](int64_t begin, int64_t end, int thread) {
        for (int64_t k = begin; k < end; ++k) {
          const size_t i = sampled_rows_[k];
          ChooseToken(*rows_[i].decoder, logits.subspan(i * vocab_size_, vocab_size_),
                      sampling_scratch_[thread], &row_chosen_[i]);
        }
      });
  for (size_t i = 0; i < rows; ++i) {
    if (GenerateJob* job = rows_[i].decoder) {
      if (greedy) row_chosen_[i] = Choice{row_next_[i], 0.0f, {}};
      EmitToken(*job, std::move(row_chosen_[i]));
    } else {
      AfterFed(*rows_[i].job, 1, logits.subspan(i * vocab_size_, vocab_size_), share);
    }
  }
}

void Scheduler::AfterFed(Job& job, int count, std::span<float> logits, double attention_seconds) {
  job.attention_seconds += attention_seconds;
  if (listener_) listener_->OnPromptTokens(job.client_api, count);
  job.Fed(*this, count, logits);
}

void Scheduler::ScoreFed(ScoreJob& job, int count, std::span<float> logits) {
  const ScoreSpec& spec = job.spec;
  for (int i = 0; i < count; ++i) {
    const int32_t target = spec.tokens[job.fed + i + 1];
    const std::span<const float> row =
        logits.subspan(static_cast<size_t>(i) * vocab_size_, vocab_size_);
    const double nll = TokenNll(row, target);
    job.nll_sum += nll;
    ++job.scored;
    if (spec.return_token_nll) job.pending_nll.push_back(nll);
    if (spec.top_logprobs > 0) TopLogprobs(row, spec.top_logprobs, &job.pending_top.emplace_back());
  }
  job.fed += count;
  if (job.fed == job.to_feed.size()) {
    FinishScore(job, absl::OkStatus());
  } else if (job.scored - job.reported >= spec.progress_interval_tokens) {
    job.reported = job.scored;
    job.observer->OnProgress(ScoreProgress{job.scored, static_cast<int64_t>(spec.tokens.size()),
                                           std::move(job.pending_nll), std::move(job.pending_top)});
    job.pending_nll.clear();
    job.pending_top.clear();
  }
}

void Scheduler::GenerateFed(GenerateJob& job, int count, std::span<float> logits) {
  for (int i = 0; i < count; ++i) job.session->Record(job.to_feed[job.fed + i]);
  job.fed += count;
  if (job.fed < job.to_feed.size()) return;
  if (job.spec.max_new_tokens == 0) {
    FinishGenerate(job, FinishReason::kFinishReasonLength, absl::OkStatus(),
                   "max_new_tokens is 0: the prompt was fed, nothing generated");
    return;
  }
  SampleNext(job, logits.subspan(0, vocab_size_));
}

void Scheduler::ChooseToken(GenerateJob& job, std::span<float> logits, SamplingScratch& scratch,
                            Choice* choice) const {
  if (job.spec.return_logprobs) scratch.logits.assign(logits.begin(), logits.end());
  std::span<const int32_t> history;
  if (job.sampler->params().repetition_penalty != 1.0f) {
    scratch.history.assign(job.session->history().begin(), job.session->history().end());
    history = scratch.history;
  }
  choice->token = job.sampler->Sample(logits, history);
  if (job.spec.return_logprobs) {
    choice->logprob = static_cast<float>(-TokenNll(scratch.logits, choice->token));
    if (job.spec.top_logprobs > 0) {
      TopLogprobs(scratch.logits, job.spec.top_logprobs, &choice->top);
    }
  }
}

void Scheduler::SampleNext(GenerateJob& job, std::span<float> logits) {
  Choice choice;
  ChooseToken(job, logits, sampling_scratch_[0], &choice);
  EmitToken(job, std::move(choice));
}

void Scheduler::EmitToken(GenerateJob& job, Choice choice) {
  const GenerateSpec& spec = job.spec;
  const int32_t token = choice.token;
  const SteadyClock::time_point now = SteadyClock::now();
  ++job.generated;
  if (listener_) {
    if (job.generated == 1) {
      listener_->OnFirstToken(job.client_api, Seconds(now - job.arrival));
    } else {
      listener_->OnInterToken(job.client_api, Seconds(now - job.last_token));
    }
  }
  if (job.generated == 1) job.first_token = now;
  job.last_token = now;
  job.next_token = token;
  job.is_decoding = true;

  TokenDelta delta;
  delta.token_ids.push_back(token);
  if (spec.return_logprobs) {
    delta.logprobs.push_back(choice.logprob);
    if (spec.top_logprobs > 0) delta.top_logprobs.push_back(std::move(choice.top));
  }
  // The end of the text: flush held-back bytes, which may still complete a stop string.
  auto flush = [&](std::string* text) {
    StopStringMatcher::Result tail =
        job.stop_matcher->Push(job.detokenizer ? job.detokenizer->Finish() : std::string());
    *text += tail.text;
    if (!tail.stopped) *text += job.stop_matcher->Flush();
    return tail;
  };
  std::optional<FinishReason> finish;
  std::string detail;
  if (std::find(spec.stop_token_ids.begin(), spec.stop_token_ids.end(), token) !=
      spec.stop_token_ids.end()) {
    finish = FinishReason::kFinishReasonStop;
    detail = absl::StrCat("stop token id ", token);
    flush(&delta.text);
  } else {
    StopStringMatcher::Result piece =
        job.stop_matcher->Push(job.detokenizer ? job.detokenizer->Push(token) : std::string());
    delta.text = std::move(piece.text);
    if (!piece.stopped && job.generated >= spec.max_new_tokens) {
      finish = FinishReason::kFinishReasonLength;
      detail = absl::StrCat("max_new_tokens (", spec.max_new_tokens, ") reached");
      piece = flush(&delta.text);
    }
    if (piece.stopped) {
      finish = FinishReason::kFinishReasonStop;
      detail = absl::StrCat("stop string \"", piece.matched, "\"");
    }
  }
  job.observer->OnTokens(std::move(delta));
  if (finish) FinishGenerate(job, *finish, absl::OkStatus(), std::move(detail));
}

void Scheduler::FinishGenerate(GenerateJob& job, FinishReason reason, absl::Status status,
                               std::string detail) {
  if (job.finished) return;
  job.finished = true;
  const SteadyClock::time_point now = SteadyClock::now();
  GenerateResult result;
  result.status = std::move(status);
  result.finish_reason = reason;
  result.finish_detail = std::move(detail);
  result.request_id = job.request_id;
  result.prompt_tokens = static_cast<int64_t>(job.fed);
  result.generated_tokens = job.generated;
  result.evicted_tokens = job.session->cache().tokens_evicted() - job.evicted_at_start;
  result.timings = MakeTimings(job.arrival, job.admitted, job.first_token, job.last_token,
                               job.generated, job.attention_seconds, now);
  if (job.entry != nullptr) {
    SessionEntry& entry = *job.entry;
    // What the stream has not run through the model yet: the last sampled token, or the
    // carried-over tokens a cancelled prefill did not reach.
    if (job.generated > 0) {
      entry.unfed_tokens = {job.next_token};
    } else if (job.fed < job.carried) {
      entry.unfed_tokens.assign(job.to_feed.begin() + job.fed, job.to_feed.begin() + job.carried);
    } else {
      entry.unfed_tokens.clear();
    }
    entry.busy = false;
    entry.last_used = now;
    entry.last_used_unix_ms = UnixMillisNow();
    ++entry.requests;
    entry.stored = false;  // the turn changed it
    // The turn's answer waits for its write, so that a client that saw it can count on it.
    // A failed write is counted and logged (listener); the session stays in memory.
    if (sessions_.persists_every_turn()) {
      (void)sessions_.Persist(entry, StoreWrite::kStoreWriteTurn);
    }
    NoteIdle(entry);
    result.session_id = entry.id;
    result.session = sessions_.Info(entry, now);
  } else {
    (void)store_.Destroy(job.session->id());
  }
  job.session = nullptr;
  if (listener_) listener_->OnGenerateFinished(job.client_api, result);
  job.observer->OnFinished(std::move(result));
}

void Scheduler::FinishScore(ScoreJob& job, absl::Status status) {
  if (job.finished) return;
  job.finished = true;
  const SteadyClock::time_point now = SteadyClock::now();
  const int64_t total = static_cast<int64_t>(job.spec.tokens.size());
  if (status.ok()) {
    job.observer->OnProgress(
        ScoreProgress{job.scored, total, std::move(job.pending_nll), std::move(job.pending_top)});
  }
  ScoreResult result;
  result.status = std::move(status);
  result.request_id = job.request_id;
  result.tokens = total;
  result.scored_tokens = job.scored;
  result.nll_mean = job.scored > 0 ? job.nll_sum / static_cast<double>(job.scored) : 0.0;
  result.perplexity = std::exp(result.nll_mean);
  result.evicted_tokens = job.session->cache().tokens_evicted();
  result.cache_description = job.session->cache().Describe();
  result.timings = MakeTimings(job.arrival, job.admitted, now, now, 0, job.attention_seconds, now);
  (void)store_.Destroy(job.session->id());
  job.session = nullptr;
  if (listener_) listener_->OnScoreFinished(job.client_api, result);
  job.observer->OnFinished(std::move(result));
}

void Scheduler::Fail(Job& job, FinishReason reason, const absl::Status& status) {
  job.Finish(*this, reason, status, std::string(status.message()));
}

void Scheduler::ReportEvicted(const Job& job, int64_t tokens) {
  if (tokens > 0) listener_->OnEvictedTokens(job.client_api, tokens);
}

}  // namespace sinkserve
