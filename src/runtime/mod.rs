//! What the stages run on: threads, scratch buffers and the workspace arena they may be
//! carved from, the prefetch queue, streaming stores and the stage timers. Nothing here
//! knows about attention.

pub(crate) mod arena;
pub(crate) mod buffer;
pub(crate) mod pool;
pub(crate) mod prefetch;
pub(crate) mod profile;
pub(crate) mod stream;
pub(crate) mod threads;
