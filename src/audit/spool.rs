//! The local spool: where audit rows wait, durably, while the store is down.
//!
//! Layout: `<data_dir>/spool/seg-<20-digit number>.spool`, append-only segments. Each record
//! is one frame `[len u32 LE][crc32 u32 LE][payload = AuditRow as JSON]`. A batch is written
//! with one `write_all` and made durable with one `fsync` before [`Spool::append`] returns,
//! so a spilled record survives a crash.
//!
//! Torn tails: a crash in the middle of an append leaves a short or corrupt last frame. The
//! reader stops at the first frame whose length runs past the end or whose CRC does not match
//! and counts it as torn: everything before it is replayed, nothing after it is trusted. A
//! segment found on disk at start-up is never appended to again (appending after a torn tail
//! would hide the new frames behind it): new records always go to a fresh segment.
//!
//! Replay order is segment order, and the writer keeps sending new batches to the spool while
//! it is non-empty, so rows land in the store in the order they were accepted. A segment is
//! deleted only after the store confirmed every record in it; a record may therefore be
//! replayed twice (crash between commit and delete), which the store absorbs with
//! `ON CONFLICT (request_id) DO NOTHING`.
//!
//! Costs: memory is one index entry (request id → segment, offset) per spooled record, for
//! `find_request`, up to [`INDEX_CAP`]; disk is ~300 bytes per key-invalidation record. Segments rotate at
//! [`SEGMENT_BYTES`] (8 MiB, ~25k records: one segment replays in well under a second).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::AuditRow;

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 8 << 20;
const FRAME_HEADER: usize = 8;
/// Most request ids indexed for `find` (~100 bytes each); a longer outage still spools every
/// record, but ids past the cap are not found until the store has them.
pub const INDEX_CAP: usize = 1_000_000;
/// A frame longer than this is corruption, not a record (keys are capped far below).
const MAX_FRAME: usize = 256 << 20;

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), table computed at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Append one frame for `payload` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What reading a segment found.
#[derive(Debug, Default)]
pub struct SegmentRead {
    /// (offset of the frame, row), in file order.
    pub rows: Vec<(u64, AuditRow)>,
    /// A short, oversized or corrupt frame ended the read before the end of the file.
    pub torn: bool,
}

/// Decode every intact frame of `data`, stopping at the first bad one.
pub fn decode_frames(data: &[u8]) -> SegmentRead {
    let mut read = SegmentRead::default();
    let mut pos = 0usize;
    while pos < data.len() {
        let Some(header) = data.get(pos..pos + FRAME_HEADER) else {
            read.torn = true;
            break;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = pos + FRAME_HEADER;
        let payload = if len <= MAX_FRAME {
            data.get(start..start + len)
        } else {
            None
        };
        let row = payload
            .filter(|p| crc32(p) == crc)
            .and_then(|p| serde_json::from_slice::<AuditRow>(p).ok());
        match row {
            Some(row) => read.rows.push((pos as u64, row)),
            None => {
                read.torn = true;
                break;
            }
        }
        pos = start + len;
    }
    read
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("seg-{id:020}.spool"))
}

fn segment_id(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("seg-")?
        .strip_suffix(".spool")?
        .parse()
        .ok()
}

/// The segment being appended to.
struct Current {
    id: u64,
    file: File,
    bytes: u64,
}

/// The spool directory. Not internally synchronised: the pipeline keeps it behind a mutex and
/// only the writer task appends or replays.
pub struct Spool {
    dir: PathBuf,
    /// Records per segment still on disk (closed and current), by segment id.
    segments: BTreeMap<u64, u64>,
    current: Option<Current>,
    next_id: u64,
    index: HashMap<String, (u64, u64)>,
    records: u64,
    max_seq: i64,
    torn_frames: u64,
}

impl Spool {
    /// Open (creating) the directory and index every intact record already in it.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            segments: BTreeMap::new(),
            current: None,
            next_id: 1,
            index: HashMap::new(),
            records: 0,
            max_seq: 0,
            torn_frames: 0,
        };
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| segment_id(&e.path()))
            .collect();
        ids.sort_unstable();
        for id in ids {
            let read = decode_frames(&fs::read(segment_path(dir, id))?);
            if read.torn {
                spool.torn_frames += 1;
                tracing::warn!(
                    segment = id,
                    intact = read.rows.len(),
                    "spool segment has a torn tail"
                );
            }
            for (offset, row) in &read.rows {
                spool.note(id, *offset, row);
            }
            spool.segments.insert(id, read.rows.len() as u64);
            spool.next_id = id + 1;
        }
        Ok(spool)
    }

    fn note(&mut self, id: u64, offset: u64, row: &AuditRow) {
        if self.index.len() < INDEX_CAP {
            self.index.insert(row.request_id.clone(), (id, offset));
        }
        self.records += 1;
        self.max_seq = self.max_seq.max(row.seq);
    }

    /// Records currently spooled (not yet confirmed by the store).
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Highest `seq` ever spooled by this process or found on disk.
    pub fn max_seq(&self) -> i64 {
        self.max_seq
    }

    /// Torn frames met while opening.
    pub fn torn_frames(&self) -> u64 {
        self.torn_frames
    }

    /// Append a batch and fsync it. On error nothing is indexed (a partial write is a torn
    /// tail for the reader) and the current segment is abandoned so later appends start clean.
    pub fn append(&mut self, rows: &[AuditRow]) -> io::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(rows.len() * 256);
        let mut offsets = Vec::with_capacity(rows.len());
        for row in rows {
            offsets.push(buf.len() as u64);
            let payload = serde_json::to_vec(row).map_err(io::Error::other)?;
            encode_frame(&mut buf, &payload);
        }
        let current = self.current_segment()?;
        let base = current.bytes;
        let id = current.id;
        let result = current
            .file
            .write_all(&buf)
            .and_then(|()| current.file.sync_data());
        if let Err(e) = result {
            self.current = None;
            return Err(e);
        }
        current.bytes += buf.len() as u64;
        if current.bytes >= SEGMENT_BYTES {
            self.current = None;
        }
        for (row, off) in rows.iter().zip(offsets) {
            self.note(id, base + off, row);
        }
        *self.segments.entry(id).or_insert(0) += rows.len() as u64;
        Ok(())
    }

    fn current_segment(&mut self) -> io::Result<&mut Current> {
        if self.current.is_none() {
            let id = self.next_id;
            let path = segment_path(&self.dir, id);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            // Make the new directory entry durable too.
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            self.next_id += 1;
            self.segments.insert(id, 0);
            self.current = Some(Current { id, file, bytes: 0 });
        }
        match self.current.as_mut() {
            Some(c) => Ok(c),
            None => Err(io::Error::other("spool segment vanished")),
        }
    }

    /// The oldest segment to replay, closing the current one if it is the only one left (new
    /// appends then start a new segment). Returns its id and intact rows.
    pub fn oldest_for_replay(&mut self) -> io::Result<Option<(u64, Vec<AuditRow>)>> {
        let Some((&id, _)) = self.segments.iter().next() else {
            return Ok(None);
        };
        if self.current.as_ref().is_some_and(|c| c.id == id) {
            self.current = None;
        }
        let read = decode_frames(&fs::read(segment_path(&self.dir, id))?);
        Ok(Some((id, read.rows.into_iter().map(|(_, r)| r).collect())))
    }

    /// The store confirmed every row of segment `id`: forget and delete it.
    pub fn confirm_segment(&mut self, id: u64, rows: &[AuditRow]) -> io::Result<()> {
        if self.current.as_ref().is_some_and(|c| c.id == id) {
            self.current = None;
        }
        for row in rows {
            if self
                .index
                .get(&row.request_id)
                .is_some_and(|(seg, _)| *seg == id)
            {
                self.index.remove(&row.request_id);
            }
        }
        let n = self.segments.remove(&id).unwrap_or(0);
        self.records = self.records.saturating_sub(n);
        match fs::remove_file(segment_path(&self.dir, id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The spooled row with this request id, read back from its segment.
    pub fn find(&self, request_id: &str) -> io::Result<Option<AuditRow>> {
        let Some(&(id, offset)) = self.index.get(request_id) else {
            return Ok(None);
        };
        let mut file = File::open(segment_path(&self.dir, id))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut header = [0u8; FRAME_HEADER];
        file.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_FRAME {
            return Ok(None);
        }
        let mut frame = header.to_vec();
        frame.resize(FRAME_HEADER + len, 0);
        file.read_exact(&mut frame[FRAME_HEADER..])?;
        Ok(decode_frames(&frame).rows.pop().map(|(_, r)| r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Kind;

    fn row(seq: i64) -> AuditRow {
        AuditRow {
            seq,
            request_id: format!("req-{seq}"),
            triggered_by: "t".into(),
            token_name: None,
            timestamp_us: 1_700_000_000_000_000 + seq,
            node_id: "n".into(),
            kind: Kind::Keys,
            pattern: None,
            pattern_type: None,
            keys: vec![format!("k{seq}")],
            matched_count: 1,
            latency_us: 10,
            body_hash: "h".into(),
        }
    }

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("spool-test-{}", fastrand::u64(..)));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn append_reopen_replay_confirm() {
        let dir = tmp();
        let mut s = Spool::open(&dir).unwrap();
        s.append(&[row(1), row(2)]).unwrap();
        s.append(&[row(3)]).unwrap();
        assert_eq!(s.records(), 3);
        assert_eq!(s.find("req-2").unwrap().unwrap(), row(2));
        drop(s);
        let mut s = Spool::open(&dir).unwrap();
        assert_eq!((s.records(), s.max_seq()), (3, 3));
        s.append(&[row(4)]).unwrap(); // goes to a new segment
        let (id, rows) = s.oldest_for_replay().unwrap().unwrap();
        assert_eq!(rows, vec![row(1), row(2), row(3)]);
        s.confirm_segment(id, &rows).unwrap();
        assert_eq!(s.records(), 1);
        assert!(s.find("req-1").unwrap().is_none());
        let (id, rows) = s.oldest_for_replay().unwrap().unwrap();
        assert_eq!(rows, vec![row(4)]);
        s.confirm_segment(id, &rows).unwrap();
        assert!(s.is_empty() && s.oldest_for_replay().unwrap().is_none());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn torn_tail_is_skipped() {
        let dir = tmp();
        let mut s = Spool::open(&dir).unwrap();
        s.append(&[row(1), row(2), row(3)]).unwrap();
        drop(s);
        let path = segment_path(&dir, 1);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let mut s = Spool::open(&dir).unwrap();
        assert_eq!((s.records(), s.torn_frames()), (2, 1));
        let (_, rows) = s.oldest_for_replay().unwrap().unwrap();
        assert_eq!(rows, vec![row(1), row(2)]);
        // A flipped payload byte is caught by the CRC.
        let mut buf = Vec::new();
        encode_frame(&mut buf, &serde_json::to_vec(&row(9)).unwrap());
        let last = buf.len() - 2;
        buf[last] ^= 0x40;
        let read = decode_frames(&buf);
        assert!(read.torn && read.rows.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
