//! Sync tokens: what a client sends back to say where it is. Below sync itself, since reads of
//! room history (`rooms::read`) accept them as `from` tokens too.

use crate::error::{Error, Result};

/// Where a client is: the stream position and the typing serial it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncToken {
    pub pos: u64,
    pub typing: u64,
}

impl SyncToken {
    pub fn encode(&self) -> String {
        format!("s{}_{}", self.pos, self.typing)
    }

    pub fn parse(token: &str) -> Result<Self> {
        let bad = || Error::invalid_param(format!("invalid sync token {token:?}"));
        let rest = token.strip_prefix('s').ok_or_else(bad)?;
        let (pos, typing) = rest.split_once('_').unwrap_or((rest, "0"));
        Ok(Self { pos: pos.parse().map_err(|_| bad())?, typing: typing.parse().map_err(|_| bad())? })
    }
}
