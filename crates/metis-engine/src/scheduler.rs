//! Continuous batching: one engine thread owns the model; requests join and leave between
//! decode steps.
//!
//! Each request arrives on a channel, is prefilled on its own (batch-1 KV cache of its own),
//! and then takes part in every decode step, which runs one batched forward over all running
//! sequences through [`Model::forward_decode_ragged`] (weights read once per step, attention
//! per sequence). Text goes back to the request through its [`EventSink`] as soon as it is
//! certain: complete UTF-8 and not possibly the start of a stop string. At most `max_batch`
//! sequences run at once; at most `max_queue` more wait, and beyond that [`Scheduler::submit`]
//! refuses, which is the back-pressure (`metis serve` answers 429).
//!
//! The scheduler knows nothing of async runtimes: a request's events go to any
//! [`EventSink`] (a `std::sync::mpsc::Sender`, or a caller's adaptor to its own channel), so
//! the server (tokio channels, streaming) and local evaluation (one completion per request)
//! share one batching engine.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use candle_core::Tensor;

use crate::generate::{FinishReason, GenerateError};
use crate::model::{KvCache, Model};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{DecodeStream, Tokenizer};

/// What the engine sends back to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// New generated text.
    Text(String),
    /// The sequence is complete; no event follows. `finish` is [`FinishReason::Stop`] (a stop
    /// id or stop string) or [`FinishReason::Length`] (`max_tokens` reached).
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The engine failed on this sequence; no event follows.
    Error(String),
}

/// Where a request's [`GenEvent`]s go. The engine thread owns the sink while the sequence
/// runs and drops it when the sequence ends, so a channel-backed sink closes on its own.
pub trait EventSink: Send {
    /// Delivers `event`. Returns false when nobody listens any more: the engine then drops
    /// the sequence at once instead of generating text nobody reads.
    fn send(&mut self, event: GenEvent) -> bool;

    /// Whether nobody listens any more, asked before a waiting request is prefilled and on
    /// steps that sent nothing (a sink that cannot tell says false, and the sequence is
    /// dropped at its next send instead).
    fn is_closed(&self) -> bool {
        false
    }
}

impl EventSink for mpsc::Sender<GenEvent> {
    fn send(&mut self, event: GenEvent) -> bool {
        mpsc::Sender::send(self, event).is_ok()
    }
}

/// One generation job.
pub struct GenRequest {
    pub prompt_ids: Vec<u32>,
    /// Generated tokens at most (a stop id does not count); 0 ends at once with
    /// [`FinishReason::Length`].
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Strings that end the sequence; the text is cut before the earliest one.
    pub stop_strings: Vec<String>,
    /// Keep going through stop ids.
    pub ignore_eos: bool,
    pub events: Box<dyn EventSink>,
}

impl std::fmt::Debug for GenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenRequest")
            .field("prompt_ids", &self.prompt_ids.len())
            .field("max_tokens", &self.max_tokens)
            .field("sampling", &self.sampling)
            .field("stop_strings", &self.stop_strings)
            .field("ignore_eos", &self.ignore_eos)
            .finish_non_exhaustive()
    }
}

/// Why a request was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the request queue is full")]
    QueueFull,
    #[error("the engine has stopped")]
    Stopped,
}

/// Sizes of the batch and the queue.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Sequences decoded together (at least 1).
    pub max_batch: usize,
    /// Requests allowed to wait for a batch slot (`usize::MAX`: never refuse, for callers
    /// that bound their own requests in flight).
    pub max_queue: usize,
}

/// Counters and gauges of the engine thread, readable from any thread (the server renders
/// them for Prometheus; tests and local evaluation read the batch sizes reached).
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Requests waiting for a batch slot.
    pub queue_depth: AtomicUsize,
    /// Sequences being decoded.
    pub running: AtomicUsize,
    /// Prompt prefills run.
    pub prefills: AtomicU64,
    /// Prompt tokens prefilled.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated (stop ids excluded).
    pub generated_tokens: AtomicU64,
    /// Batched decode steps run.
    pub decode_steps: AtomicU64,
    /// Sequences summed over decode steps: `decode_rows / decode_steps` is the mean batch.
    pub decode_rows: AtomicU64,
    /// The most sequences decoded in one step.
    pub peak_batch: AtomicUsize,
}

impl std::fmt::Display for SchedulerStats {
    /// One line for a person: prefills, tokens, decode steps and the batch sizes reached.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let steps = self.decode_steps.load(Ordering::Relaxed);
        let rows = self.decode_rows.load(Ordering::Relaxed);
        let mean = if steps == 0 {
            0.0
        } else {
            rows as f64 / steps as f64
        };
        write!(
            f,
            "{} prompts prefilled ({} tokens), {} tokens generated in {steps} decode steps \
             (mean batch {mean:.1}, peak {})",
            self.prefills.load(Ordering::Relaxed),
            self.prompt_tokens.load(Ordering::Relaxed),
            self.generated_tokens.load(Ordering::Relaxed),
            self.peak_batch.load(Ordering::Relaxed),
        )
    }
}

/// Handle to the engine thread; clones share the thread.
#[derive(Debug, Clone)]
pub struct Scheduler {
    tx: mpsc::Sender<GenRequest>,
    waiting: Arc<AtomicUsize>,
    max_queue: usize,
    stats: Arc<SchedulerStats>,
}

impl Scheduler {
    /// Starts the engine thread, which owns `model` and reports into `stats`. Generation
    /// ends a sequence at any of `stop_ids` (unless the request ignores them). The thread
    /// ends when every handle is dropped and the running sequences are done.
    pub fn start(
        model: Model,
        tokenizer: Arc<Tokenizer>,
        stop_ids: Vec<u32>,
        config: SchedulerConfig,
        stats: Arc<SchedulerStats>,
    ) -> std::io::Result<Scheduler> {
        let (tx, rx) = mpsc::channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let engine = Engine {
            model,
            stop_ids,
            max_batch: config.max_batch.max(1),
            waiting: Arc::clone(&waiting),
            stats: Arc::clone(&stats),
        };
        std::thread::Builder::new()
            .name("metis-engine".into())
            .spawn(move || engine.run(&tokenizer, rx))?;
        Ok(Scheduler {
            tx,
            waiting,
            max_queue: config.max_queue,
            stats,
        })
    }

    /// Queues a request, or refuses it when `max_queue` requests already wait.
    pub fn submit(&self, req: GenRequest) -> Result<(), SubmitError> {
        let reserved = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < self.max_queue).then_some(w + 1)
            });
        let Ok(prev) = reserved else {
            return Err(SubmitError::QueueFull);
        };
        self.stats.queue_depth.store(prev + 1, Ordering::Relaxed);
        if self.tx.send(req).is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Stopped);
        }
        Ok(())
    }

    /// Requests waiting for a batch slot.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The engine thread's counters.
    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }
}

struct Engine {
    model: Model,
    stop_ids: Vec<u32>,
    max_batch: usize,
    waiting: Arc<AtomicUsize>,
    stats: Arc<SchedulerStats>,
}

/// A running sequence.
struct Active<'t> {
    req: GenRequest,
    cache: KvCache,
    sampler: Sampler,
    decoder: DecodeStream<'t>,
    ids: Vec<u32>,
    /// Decoded text so far, and how much of it was sent.
    text: String,
    sent: usize,
    /// A stop string cut the text.
    cut: bool,
}

/// What one step did to a sequence.
enum Step {
    Continue,
    Finished,
    /// The receiver went away, or the sequence failed (reported).
    Cancelled,
}

impl Engine {
    fn run(self, tokenizer: &Tokenizer, rx: mpsc::Receiver<GenRequest>) {
        let mut active: Vec<Active<'_>> = Vec::new();
        let mut open = true;
        while open || !active.is_empty() {
            // Admit waiting requests while there is room; block only when idle.
            while open && active.len() < self.max_batch {
                let req = if active.is_empty() {
                    match rx.recv() {
                        Ok(r) => r,
                        Err(_) => {
                            open = false;
                            break;
                        }
                    }
                } else {
                    match rx.try_recv() {
                        Ok(r) => r,
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                };
                let left = self
                    .waiting
                    .fetch_sub(1, Ordering::AcqRel)
                    .saturating_sub(1);
                self.stats.queue_depth.store(left, Ordering::Relaxed);
                if req.events.is_closed() {
                    continue;
                }
                if let Some(seq) = self.prefill(tokenizer, req) {
                    active.push(seq);
                }
            }
            self.stats.running.store(active.len(), Ordering::Relaxed);
            if active.is_empty() {
                continue;
            }
            self.decode_step(&mut active);
            self.stats.running.store(active.len(), Ordering::Relaxed);
        }
    }

    /// Runs the prompt through a fresh cache and samples the first token; None when the
    /// sequence is already over (or failed, which was reported).
    fn prefill<'t>(&self, tokenizer: &'t Tokenizer, mut req: GenRequest) -> Option<Active<'t>> {
        let n = req.prompt_ids.len();
        if n == 0 {
            req.events
                .send(GenEvent::Error(GenerateError::EmptyPrompt.to_string()));
            return None;
        }
        if req.max_tokens == 0 {
            req.events.send(GenEvent::Done {
                finish: FinishReason::Length,
                prompt_tokens: n,
                completion_tokens: 0,
            });
            return None;
        }
        self.stats.prefills.fetch_add(1, Ordering::Relaxed);
        self.stats
            .prompt_tokens
            .fetch_add(n as u64, Ordering::Relaxed);
        let mut cache = self.model.new_cache(1);
        let logits = Tensor::new(req.prompt_ids.as_slice(), self.model.device())
            .and_then(|t| t.unsqueeze(0))
            .map_err(|e| e.to_string())
            .and_then(|input| {
                self.model
                    .forward_last(&input, &mut cache)
                    .map_err(|e| e.to_string())
            })
            .and_then(|l| {
                l.get(0)
                    .and_then(|r| r.to_vec1::<f32>())
                    .map_err(|e| e.to_string())
            });
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                req.events.send(GenEvent::Error(e));
                return None;
            }
        };
        let mut seq = Active {
            sampler: Sampler::new(req.sampling),
            req,
            cache,
            decoder: tokenizer.decode_stream(true),
            ids: Vec::new(),
            text: String::new(),
            sent: 0,
            cut: false,
        };
        let token = seq.sampler.next_token(&logits);
        match self.step(&mut seq, token) {
            Step::Continue => Some(seq),
            Step::Finished | Step::Cancelled => None,
        }
    }

    fn decode_step(&self, active: &mut Vec<Active<'_>>) {
        // A running sequence always holds a token: `step` pushes one before it continues.
        let tokens: Vec<u32> = active
            .iter()
            .filter_map(|a| a.ids.last().copied())
            .collect();
        let mut caches: Vec<&mut KvCache> = active.iter_mut().map(|a| &mut a.cache).collect();
        let logits = self
            .model
            .forward_decode_ragged(&tokens, &mut caches)
            .map_err(|e| e.to_string())
            .and_then(|t| t.to_vec2::<f32>().map_err(|e| e.to_string()));
        self.stats.decode_steps.fetch_add(1, Ordering::Relaxed);
        self.stats
            .decode_rows
            .fetch_add(active.len() as u64, Ordering::Relaxed);
        self.stats
            .peak_batch
            .fetch_max(active.len(), Ordering::Relaxed);
        let rows = match logits {
            Ok(rows) => rows,
            Err(e) => {
                for mut a in active.drain(..) {
                    a.req.events.send(GenEvent::Error(e.clone()));
                }
                return;
            }
        };
        let tokens = sample_all(active, &rows);
        let mut keep = Vec::with_capacity(active.len());
        for (mut seq, token) in active.drain(..).zip(tokens) {
            if let Step::Continue = self.step(&mut seq, token) {
                keep.push(seq);
            }
        }
        *active = keep;
    }

    /// Appends the sampled `token` to `seq` and sends what became certain.
    fn step(&self, seq: &mut Active<'_>, token: u32) -> Step {
        if !seq.req.ignore_eos && self.stop_ids.contains(&token) {
            return self.finish(seq, FinishReason::Stop);
        }
        seq.ids.push(token);
        self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
        match seq.decoder.push(token) {
            Ok(Some(piece)) => seq.text.push_str(&piece),
            Ok(None) => {}
            Err(e) => {
                seq.req.events.send(GenEvent::Error(e.to_string()));
                return Step::Cancelled;
            }
        }
        if let Some(cut) = find_stop(&seq.text, seq.sent, &seq.req.stop_strings) {
            seq.text.truncate(cut);
            seq.cut = true;
            return self.finish(seq, FinishReason::Stop);
        }
        if seq.ids.len() >= seq.req.max_tokens {
            return self.finish(seq, FinishReason::Length);
        }
        let ready = seq.text.len() - held_back(&seq.text, &seq.req.stop_strings);
        if ready > seq.sent {
            let piece = seq.text[seq.sent..ready].to_owned();
            seq.sent = ready;
            if !seq.req.events.send(GenEvent::Text(piece)) {
                return Step::Cancelled;
            }
        } else if seq.req.events.is_closed() {
            return Step::Cancelled;
        }
        Step::Continue
    }

    /// Flushes the remaining text and reports the end of `seq`.
    fn finish(&self, seq: &mut Active<'_>, finish: FinishReason) -> Step {
        // After a stop-string cut nothing more is sent; otherwise the detokenizer may still
        // hold an incomplete character to flush.
        if !seq.cut {
            if let Ok(Some(piece)) = seq.decoder.finish() {
                seq.text.push_str(&piece);
            }
        }
        if seq.text.len() > seq.sent {
            let piece = seq.text[seq.sent..].to_owned();
            seq.sent = seq.text.len();
            seq.req.events.send(GenEvent::Text(piece));
        }
        seq.req.events.send(GenEvent::Done {
            finish,
            prompt_tokens: seq.req.prompt_ids.len(),
            completion_tokens: seq.ids.len(),
        });
        Step::Finished
    }
}

/// Samples the next token of every sequence from its row of logits. Sampling over a large
/// vocabulary (softmax and log-probability over ~128k logits per row) costs as much as the
/// forward pass itself at small model sizes, so rows are split across the available cores.
fn sample_all(active: &mut [Active<'_>], rows: &[Vec<f32>]) -> Vec<u32> {
    // Asked once: on Linux the answer reads cgroup files, too slow for every decode step.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let threads =
        *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let per = active.len().div_ceil(threads).max(8);
    if active.len() <= per {
        return active
            .iter_mut()
            .zip(rows)
            .map(|(a, r)| a.sampler.next_token(r))
            .collect();
    }
    let mut samplers: Vec<&mut Sampler> = active.iter_mut().map(|a| &mut a.sampler).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = samplers
            .chunks_mut(per)
            .zip(rows.chunks(per))
            .map(|(ss, rs)| {
                scope.spawn(move || {
                    ss.iter_mut()
                        .zip(rs)
                        .map(|(s, r)| s.next_token(r))
                        .collect::<Vec<u32>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Byte offset where the earliest stop string starts in `text`, searching from `from` (a
/// stop string never starts in text already sent, because [`held_back`] kept any possible
/// beginning of one).
fn find_stop(text: &str, from: usize, stops: &[String]) -> Option<usize> {
    let tail = text.get(from..)?;
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| tail.find(s.as_str()))
        .min()
        .map(|i| from + i)
}

/// Length of the longest suffix of `text` that is a proper prefix of some stop string: text
/// that must wait for the next token before it can be sent.
fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .filter_map(|s| {
            (1..s.len().min(text.len() + 1))
                .rev()
                .find(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k]))
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings() {
        let stops = vec!["STOP".to_string(), "éa".to_string()];
        assert_eq!(held_back("abcST", &stops), 2);
        assert_eq!(held_back("abcé", &stops), "é".len());
        assert_eq!(held_back("abc", &stops), 0);
        assert_eq!(find_stop("xxSTOPyy", 0, &stops), Some(2));
        assert_eq!(find_stop("xxSTOPyy", 3, &stops), None);
        assert_eq!(find_stop("abc", 0, &[]), None);
    }
}
