//! What the stages run on: threads, aligned buffers, the prefetch queue, streaming stores and
//! the stage timers. Nothing here knows about attention.

pub(crate) mod buffer;
pub(crate) mod pool;
pub(crate) mod prefetch;
pub(crate) mod profile;
pub(crate) mod stream;
pub(crate) mod threads;
