//! Activation (gradient) checkpointing per decoder layer: the loss and the gradients of the
//! trainable parameters with one layer's activations alive at a time, at the cost of a second
//! forward through every layer. (Not to be confused with [`crate::checkpoint`], which saves
//! models to disk.)
//!
//! A plain `loss.backward()` keeps the autograd graph of the whole forward, i.e. every
//! intermediate tensor of every layer, until the backward pass reaches it. With
//! [`TrainModel::backward_checkpointed`]:
//!
//! 1. the forward runs layer by layer without a graph, keeping only each layer's input
//!    (`[b, s, hidden]` per layer);
//! 2. the head (final norm, `lm_head`) and the caller's loss run on the last layer's output
//!    made a leaf [`Var`]; their backward gives the head's gradients and the gradient of that
//!    output;
//! 3. from the last layer down, each layer is recomputed from its saved input (a leaf `Var`)
//!    and backpropagated from `sum(output * upstream)`, whose gradient with respect to the
//!    output is exactly `upstream`: that gives the layer's parameter (or LoRA adapter)
//!    gradients and the gradient of its input, the next layer down's upstream;
//! 4. the embedding's gradient the same way (full fine-tuning only).
//!
//! The recomputation reuses the forward's [`Pass`], hence its dropout key: LoRA dropout draws
//! the same masks in both, and the dropout stream advances once, as for a plain forward.
//! Every layer's graph is the one a plain backward walks, so the gradients are those of
//! [`TrainModel::loss_and_grads`] without checkpointing bit for bit, except a tied
//! embedding's, whose head and embedding shares are summed in another order (rounding only;
//! `tests/grad_checkpoint.rs` bounds the difference at 1e-12 in f64, 1e-6 in f32, relative).
//!
//! Cost: one more forward through the layers, plus a copy of each layer's input into a leaf;
//! memory: one `[b, s, hidden]` tensor per layer instead of every layer's activations.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::{BatchLayout, Pass, Result, TrainModel};
use crate::optim::Grads;

/// A loss and the gradients of the trainable parameters (see [`TrainModel::loss_and_grads`]).
#[derive(Debug)]
pub struct LossGrads<A> {
    /// The loss, a detached scalar.
    pub loss: Tensor,
    /// What the loss function returned beside the loss.
    pub aux: A,
    /// By trainable name; parameters the loss does not reach are absent (as with
    /// [`Grads::from_backward`]).
    pub grads: Grads,
}

impl TrainModel {
    /// The loss `loss_fn(logits)` of one batch and the gradients of [`TrainModel::trainable`]:
    /// with `checkpoint`, by [`TrainModel::backward_checkpointed`], else by one backward
    /// through the whole graph.
    ///
    /// `loss_fn` gets the logits `[b, s, vocab]` ([`TrainModel::forward`]'s) and returns the
    /// scalar loss and anything else the caller wants out of them (`aux`; detach tensors
    /// kept there, or they hold the graph alive).
    pub fn loss_and_grads<A>(
        &self,
        input_ids: &Tensor,
        batch: &BatchLayout,
        train: bool,
        checkpoint: bool,
        loss_fn: impl FnOnce(&Tensor) -> Result<(Tensor, A)>,
    ) -> Result<LossGrads<A>> {
        if checkpoint {
            return self.backward_checkpointed(input_ids, batch, train, loss_fn);
        }
        let logits = self.forward(input_ids, batch, train)?;
        let (loss, aux) = loss_fn(&logits)?;
        let grads = Grads::from_backward(&loss.backward()?, &self.trainable);
        Ok(LossGrads {
            loss: loss.detach(),
            aux,
            grads,
        })
    }

    /// [`TrainModel::loss_and_grads`] with activation checkpointing per decoder layer (see
    /// the module docs): the same loss and gradients, holding the graph of one layer (or of
    /// the head and loss) at a time plus one `[b, s, hidden]` input per layer.
    pub fn backward_checkpointed<A>(
        &self,
        input_ids: &Tensor,
        batch: &BatchLayout,
        train: bool,
        loss_fn: impl FnOnce(&Tensor) -> Result<(Tensor, A)>,
    ) -> Result<LossGrads<A>> {
        let pass = self.begin_pass(input_ids, batch, train)?;
        let (layer_inputs, last) = self.forward_keeping_layer_inputs(&pass)?;
        let mut grads = Grads::default();
        let (loss, aux, mut upstream) = self.head_backward(last, loss_fn, &mut grads)?;
        for (i, input) in layer_inputs.into_iter().enumerate().rev() {
            // None: the loss does not depend on this layer's output (nothing to propagate).
            let Some(g) = upstream else { break };
            upstream = self.layer_backward(i, input, &g, &pass, &mut grads)?;
        }
        if let Some(g) = upstream {
            self.embedding_backward(&pass, &g, &mut grads)?;
        }
        Ok(LossGrads { loss, aux, grads })
    }

    /// Step 1: the forward without a graph. Returns every layer's input and the last layer's
    /// output, all detached: each layer's graph is dropped as soon as its output is detached.
    fn forward_keeping_layer_inputs(&self, pass: &Pass) -> Result<(Vec<Tensor>, Tensor)> {
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = self.embed(pass)?.detach();
        for (i, layer) in self.layers.iter().enumerate() {
            let next = layer.forward(&x, &pass.pos, pass.ctx(i))?.detach();
            inputs.push(std::mem::replace(&mut x, next));
        }
        Ok((inputs, x))
    }

    /// Step 2: final norm, logits and the loss on `hidden` (the last layer's output) as a
    /// leaf; adds the head's gradients to `grads`. Returns the detached loss, the loss
    /// function's extra output and the gradient of `hidden`.
    fn head_backward<A>(
        &self,
        hidden: Tensor,
        loss_fn: impl FnOnce(&Tensor) -> Result<(Tensor, A)>,
        grads: &mut Grads,
    ) -> Result<(Tensor, A, Option<Tensor>)> {
        // A Var is a copy; the detached original is dropped here.
        let hidden = Var::from_tensor(&hidden)?;
        let logits = self.logits(&self.final_norm(hidden.as_tensor())?)?;
        let (loss, aux) = loss_fn(&logits)?;
        let store = loss.backward()?;
        grads.add_backward(&store, &self.trainable)?;
        Ok((loss.detach(), aux, store.get(hidden.as_tensor()).cloned()))
    }

    /// Step 3 for layer `i`: recomputes it from its saved `input`, adds its parameters'
    /// gradients to `grads` given `upstream`, the gradient of its output, and returns the
    /// gradient of its input (None when nothing below needs it: the first layer under LoRA,
    /// whose input, the frozen embedding, has no gradient to receive).
    fn layer_backward(
        &self,
        i: usize,
        input: Tensor,
        upstream: &Tensor,
        pass: &Pass,
        grads: &mut Grads,
    ) -> Result<Option<Tensor>> {
        let wants_input_grad = i > 0 || self.embed_tokens.is_variable();
        let input = if wants_input_grad {
            Var::from_tensor(&input)?.into_inner()
        } else {
            input
        };
        let output = self.layers[i].forward(&input, &pass.pos, pass.ctx(i))?;
        let store = backward_from(&output, upstream)?;
        grads.add_backward(&store, &self.trainable)?;
        Ok(store.get(&input).cloned())
    }

    /// Step 4: the embedding's gradient from `upstream`, the gradient of the first layer's
    /// input (a tied `lm_head` already added its share in step 2).
    fn embedding_backward(&self, pass: &Pass, upstream: &Tensor, grads: &mut Grads) -> Result<()> {
        let store = backward_from(&self.embed(pass)?, upstream)?;
        grads.add_backward(&store, &self.trainable)
    }
}

/// The backward pass of `output` seeded with `upstream` as its gradient. candle's backward
/// starts from a scalar, and `sum(output * upstream)` is one whose gradient with respect to
/// `output` is `ones * upstream`, i.e. exactly `upstream`.
fn backward_from(output: &Tensor, upstream: &Tensor) -> Result<GradStore> {
    Ok((output * upstream.detach())?.sum_all()?.backward()?)
}
