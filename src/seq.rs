//! `seq` allocation that never reuses a number, even across crashes.
//!
//! A high-water mark is persisted in `<data_dir>/seq` before any number below it is handed
//! out, in blocks of [`BLOCK`]: one fsync per block, not per invalidation. A crash loses at
//! most the unused rest of a block (a gap, which SPEC allows); a number is never handed out
//! twice. Cost: an increment per call, a small write + fsync every `BLOCK` calls.

use std::io::Write;
use std::path::{Path, PathBuf};

pub const BLOCK: u64 = 10_000;

pub struct SeqAllocator {
    path: PathBuf,
    /// Last number handed out.
    last: u64,
    /// Numbers up to and including this one are reserved on disk.
    reserved: u64,
}

impl SeqAllocator {
    /// Open (or create) the allocator; `floor` is a number known to be used elsewhere (the
    /// audit store's highest seq), so numbering continues above it.
    pub fn open(data_dir: &Path, floor: u64) -> std::io::Result<SeqAllocator> {
        let path = data_dir.join("seq");
        let on_disk = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let last = on_disk.max(floor);
        let mut alloc = SeqAllocator {
            path,
            last,
            reserved: last,
        };
        alloc.reserve()?;
        Ok(alloc)
    }

    /// The last number handed out (0 before the first).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next number.
    pub fn allocate(&mut self) -> std::io::Result<u64> {
        if self.last >= self.reserved {
            self.reserve()?;
        }
        self.last += 1;
        Ok(self.last)
    }

    fn reserve(&mut self) -> std::io::Result<()> {
        let target = self.last + BLOCK;
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{target}")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        // The rename itself must be durable, or a power loss could bring back the old mark.
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.reserved = target;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_across_reopen() {
        let dir = std::env::temp_dir().join(format!("inv-seq-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let mut a = SeqAllocator::open(&dir, 0).unwrap();
        assert_eq!(a.allocate().unwrap(), 1);
        assert_eq!(a.allocate().unwrap(), 2);
        drop(a);
        let mut b = SeqAllocator::open(&dir, 0).unwrap();
        assert!(b.allocate().unwrap() > 2);
        let mut c = SeqAllocator::open(&dir, 1_000_000).unwrap();
        assert_eq!(c.allocate().unwrap(), 1_000_001);
        std::fs::remove_dir_all(&dir).ok();
    }
}
