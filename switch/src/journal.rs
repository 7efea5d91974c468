//! The on-disk state: per shard a snapshot and a journal of its inputs (issue 4).
//!
//! Layout under `<data_dir>/state/` (directories mode 0700, files 0600: PANs are in the
//! records and snapshots, in clear as BCD digits; never track 2, CVV, PIN block or ICC data,
//! which the engine never sees):
//!
//! - `boot`: the boot number, incremented and fsynced at every start (it goes into the high
//!   bits of the shards' tokens, so a token never repeats one of an earlier process).
//! - `shard-<i>/snapshot-<gen>`: the shard's whole state ([`routing::Shard::snapshot`]) at the
//!   start of generation `gen` (20 decimal digits). Generation 0 is the CSV load.
//! - `shard-<i>/journal-<gen>.log`: every input the shard took since `snapshot-<gen>`, in order.
//!   A record is `[u32 LE payload length][u32 LE crc32 of the payload][payload]`, the payload
//!   being [`routing::Input::encode`].
//!
//! - `shard-<i>/snapshot-<gen>.pending`: a periodic snapshot not yet in force (below).
//! - `settings.toml`: the engine settings the journals are written under (`crate::store`).
//!
//! State = the newest snapshot + the journal segments of that generation and later. A new
//! generation starts:
//!
//! - on a clean shutdown ([`Journal::start_generation`]), when no message is in flight between
//!   shards: every shard's snapshot is written, then the older files are removed;
//! - periodically while running: the journal starts segment `gen+1`
//!   ([`Journal::begin_generation`]) right after the batch that ends the old one, and a builder
//!   thread makes `snapshot-<gen+1>.pending` from the files ([`snapshot_sources`]: the newest
//!   snapshot in force and the closed segments since, replayed); recovery ignores (and
//!   removes) a pending snapshot, replaying the old snapshot and every segment. Once every
//!   other shard has durably journaled what this one had sent it at the cut (routing's rule),
//!   [`confirm_snapshot`] renames it into force and removes the older files
//!   (`crate::shards`).
//!
//! Writes of whole files (snapshots, `boot`) are crash-safe: temporary file, fsync, rename,
//! fsync of the directory. The journal is appended in batches ([`Journal::write_batch`]: one
//! `write` and, under `--durability fsync`, one `fdatasync` per batch: the group commit; the
//! shard encodes records with [`encode_record`]).
//!
//! Reading a journal ([`read_segment`], streamed through a 4 MiB buffer): a record that is incomplete or fails its checksum at
//! the end of the last segment is a torn write (a crash mid-append): the file is truncated
//! there with a warning naming file and offset. A bad record followed by any good one is
//! damage, not a torn write: start-up fails with an error naming file and offset.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use routing::Input;

/// Bytes before a record's payload: length and checksum.
pub const HEADER: usize = 8;
/// Largest payload accepted on reading (an input is a few hundred bytes; a request's fields
/// are bounded by the 8 KiB frame); a larger length is damage. Small, so the search for a good
/// record after a bad one (torn tail or damage?) rarely checksums garbage.
pub const MAX_RECORD: usize = 1 << 16;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// The state directory inside a data directory.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("state")
}

/// One shard's directory.
pub fn shard_dir(state: &Path, shard: usize) -> PathBuf {
    state.join(format!("shard-{shard}"))
}

fn snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation:020}"))
}

fn pending_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation:020}.pending"))
}

fn segment_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation:020}.log"))
}

/// Creates a directory (and its parents) with mode 0700 for the ones it creates.
pub fn create_dir(path: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// fsyncs a directory, making the entries created or renamed in it durable.
pub fn sync_dir(path: &Path) -> anyhow::Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsyncing directory {}", path.display()))
}

/// Writes `bytes` to `path` crash-safely: a temporary file (mode 0600), fsync, rename, fsync
/// of the directory. A crash leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    sync_dir(dir)
}

/// Reads the boot number of the last start (0 if none), writes the next one crash-safely and
/// returns it.
pub fn next_boot(state: &Path) -> anyhow::Result<u64> {
    let path = state.join("boot");
    let last = match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{}: not a boot number", path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let next = last + 1;
    write_atomic(&path, format!("{next}\n").as_bytes())?;
    Ok(next)
}

/// Creates `state` holding generation 0 (one snapshot per shard, from `snapshots`): built in
/// `state.new` and renamed into place, so a crash half-way leaves no state directory and the
/// next start loads the CSVs again.
pub fn init_state(state: &Path, snapshots: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut tmp_name = state.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".new");
    let tmp = state.with_file_name(tmp_name);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    create_dir(&tmp)?;
    for (i, bytes) in snapshots.iter().enumerate() {
        let dir = shard_dir(&tmp, i);
        create_dir(&dir)?;
        write_atomic(&snapshot_path(&dir, 0), bytes)?;
        sync_dir(&dir)?;
    }
    sync_dir(&tmp)?;
    fs::rename(&tmp, state).with_context(|| format!("renaming {}", tmp.display()))?;
    sync_dir(state.parent().unwrap_or(Path::new(".")))
}

/// [`init_state`] with a snapshot of each of `shards`.
pub fn init_state_from(state: &Path, shards: &[routing::Shard]) -> anyhow::Result<()> {
    let snapshots: Vec<Vec<u8>> = shards
        .iter()
        .map(|s| {
            let mut bytes = Vec::new();
            s.snapshot(&mut bytes);
            bytes
        })
        .collect();
    init_state(state, &snapshots)
}

/// How many `shard-<i>` directories `state` holds.
pub fn shard_dirs(state: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(state).with_context(|| format!("listing {}", state.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("shard-") {
            n += 1;
        }
    }
    Ok(n)
}

/// What one shard directory holds: the newest snapshot's generation, and the journal segments
/// of that generation and later, in order.
#[derive(Debug)]
pub struct ShardFiles {
    pub dir: PathBuf,
    pub generation: u64,
    pub snapshot: PathBuf,
    pub segments: Vec<(u64, PathBuf)>,
}

fn parse_generation(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// Lists a shard directory; leftover temporary files are removed.
pub fn shard_files(dir: &Path) -> anyhow::Result<ShardFiles> {
    list(dir, true, u64::MAX)
}

/// What a periodic snapshot of generation `generation` is built from while the shard runs
/// (`crate::shards`): the newest snapshot in force before it and the closed segments from that
/// one's generation up to `generation` (excluded). Removes nothing: the shard is running.
pub fn snapshot_sources(dir: &Path, generation: u64) -> anyhow::Result<ShardFiles> {
    list(dir, false, generation)
}

/// Lists the snapshots and segments of a shard directory below generation `before`.
fn list(dir: &Path, clean: bool, before: u64) -> anyhow::Result<ShardFiles> {
    let mut snapshots = Vec::new();
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") || name.ends_with(".pending") {
            // A temporary file, or a periodic snapshot never confirmed: the older snapshot and
            // every segment since are still there and are what recovery uses.
            if clean {
                fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        } else if let Some(g) = parse_generation(&name, "snapshot-", "") {
            snapshots.push(g);
        } else if let Some(g) = parse_generation(&name, "journal-", ".log") {
            segments.push(g);
        }
    }
    let Some(&generation) = snapshots.iter().filter(|&&g| g < before).max() else {
        bail!("{}: no snapshot", dir.display());
    };
    segments.retain(|&g| g >= generation && g < before);
    segments.sort_unstable();
    Ok(ShardFiles {
        dir: dir.to_owned(),
        generation,
        snapshot: snapshot_path(dir, generation),
        segments: segments
            .into_iter()
            .map(|g| (g, segment_path(dir, g)))
            .collect(),
    })
}

/// Where the periodic snapshot of `generation` is written before it is in force.
pub fn pending_snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    pending_path(dir, generation)
}

/// Puts the pending snapshot of `generation` in force (rename, fsync of the directory), then
/// removes the older snapshots and segments. Only once every other shard has durably
/// journaled what this one had sent it when the snapshot was taken (`crate::shards`).
pub fn confirm_snapshot(dir: &Path, generation: u64) -> anyhow::Result<()> {
    let pending = pending_path(dir, generation);
    let path = snapshot_path(dir, generation);
    fs::rename(&pending, &path).with_context(|| format!("renaming {}", pending.display()))?;
    sync_dir(dir)?;
    remove_before(dir, generation)
}

/// Removes the snapshots (pending or not) and segments of generations before `generation`.
fn remove_before(dir: &Path, generation: u64) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let g = parse_generation(&name, "snapshot-", "")
            .or_else(|| parse_generation(&name, "snapshot-", ".pending"))
            .or_else(|| parse_generation(&name, "journal-", ".log"));
        if g.is_some_and(|g| g < generation) {
            fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    sync_dir(dir)
}

/// Whether `bytes[at..]` starts with a well-formed record: plausible length, matching
/// checksum, and a payload that decodes as an input.
fn record_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// Reads one journal segment, calling `each` with every record's payload in order.
///
/// A bad record (incomplete, wrong length or checksum) with no good record after it is a torn
/// tail: when `last` (the newest segment) the file is truncated there and a warning names file
/// and offset; in an older segment it is an error. A bad record followed by a good one is
/// damage: an error naming file and offset. A record whose checksum matches but whose payload
/// does not decode is an error as well (a checksum does not lie: another version wrote it).
/// Returns the length of the valid journal.
pub fn read_segment(
    path: &Path,
    last: bool,
    mut each: impl FnMut(Input) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    use std::io::Read;
    let mut file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    // Streamed through one buffer (no file-sized allocation): a window `buf[start..end]` at
    // file offset `base + start`, refilled whenever less than a largest record is left.
    let mut buf = vec![0u8; READ_CHUNK + HEADER + MAX_RECORD];
    let (mut base, mut start, mut end) = (0u64, 0usize, 0usize);
    let mut eof = false;
    loop {
        if !eof && end - start < HEADER + MAX_RECORD {
            buf.copy_within(start..end, 0);
            base += start as u64;
            end -= start;
            start = 0;
            while end < buf.len() {
                match file.read(&mut buf[end..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(k) => end += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
        }
        if start == end {
            return Ok(base + start as u64);
        }
        let Some(payload) = record_at(&buf[..end], start) else {
            return bad_record(path, last, base + start as u64);
        };
        let input = Input::decode(payload).map_err(|e| {
            anyhow::anyhow!(
                "{}: record at offset {} does not decode: {e}",
                path.display(),
                base + start as u64
            )
        })?;
        start += HEADER + payload.len();
        each(input)?;
    }
}

/// Bytes [`read_segment`] reads at a time.
const READ_CHUNK: usize = 4 << 20;

/// A bad record at offset `at` of a segment: a torn tail (truncated when `last`, an error
/// otherwise) or, when a well-formed record follows, damage (an error). Returns the valid
/// length.
fn bad_record(path: &Path, last: bool, at: u64) -> anyhow::Result<u64> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let from = usize::try_from(at).unwrap_or(usize::MAX);
    // Torn write or damage? Any well-formed record after this point means damage.
    if let Some(next) = (from.saturating_add(1)..bytes.len())
        .find(|&o| record_at(&bytes, o).is_some_and(|p| Input::decode(p).is_ok()))
    {
        bail!(
            "{}: damaged journal record at offset {at} (a valid record follows at offset {next}); refusing to start",
            path.display()
        );
    }
    if !last {
        bail!(
            "{}: damaged journal record at offset {at} in a segment that is not the newest; refusing to start",
            path.display()
        );
    }
    tracing::warn!(
        file = %path.display(),
        offset = at,
        dropped_bytes = bytes.len() as u64 - at,
        "journal ends in a torn record (a crash mid-write): truncating it there"
    );
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.set_len(at)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("truncating {}", path.display()))?;
    Ok(at)
}

/// Makes a newly created segment durable: its inode, and its entry in the directory.
fn sync_created(file: &File, dir: &Path) -> io::Result<()> {
    file.sync_all()?;
    File::open(dir).and_then(|d| d.sync_all())
}

/// Appends one input to `buf` as a journal record: `[len][crc32][payload]`.
pub fn encode_record(buf: &mut Vec<u8>, input: &Input) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    input.encode(buf);
    let payload = &buf[start + HEADER..];
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    buf[start..start + 4].copy_from_slice(&len);
    buf[start + 4..start + HEADER].copy_from_slice(&crc);
}

/// A shard's open journal segment, appended in batches.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    generation: u64,
    /// Bytes durably (or, without fsync, completely) written.
    len: u64,
    /// Records of [`Journal::append`], for callers that do not batch their own (tools and
    /// tests; the shards encode into their own batch buffer): empty until used.
    buf: Vec<u8>,
    fsync: bool,
}

impl Journal {
    /// Opens (creating if needed) the segment of `generation` in `dir` for appending; `len` is
    /// its valid length as [`read_segment`] found it (0 for a new one).
    pub fn open(dir: &Path, generation: u64, len: u64, fsync: bool) -> anyhow::Result<Journal> {
        let path = segment_path(dir, generation);
        let existed = path.exists();
        let journal = Journal::open_unsynced(dir, generation, len, fsync)?;
        if !existed {
            sync_created(&journal.file, dir)
                .with_context(|| format!("fsyncing {}", path.display()))?;
        }
        Ok(journal)
    }

    /// [`Journal::open`] without making a newly created file durable: the caller calls
    /// [`sync_created`] before relying on it.
    fn open_unsynced(
        dir: &Path,
        generation: u64,
        len: u64,
        fsync: bool,
    ) -> anyhow::Result<Journal> {
        let path = segment_path(dir, generation);
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Journal {
            file,
            path,
            dir: dir.to_owned(),
            generation,
            len,
            buf: Vec::new(),
            fsync,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A journal whose file is open read-only, so every commit fails (EBADF): for the tests of
    /// what a failing disk does.
    #[cfg(test)]
    pub(crate) fn failing_for_tests(dir: &Path) -> Journal {
        let mut j = Journal::open(dir, 0, 0, true).expect("open");
        j.file = File::open(&j.path).expect("reopen read-only");
        j
    }

    /// Buffers one input (it reaches the file at the next [`Journal::commit`]).
    pub fn append(&mut self, input: &Input) {
        encode_record(&mut self.buf, input);
    }

    /// Whether inputs are buffered and not yet committed.
    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Writes the buffered records and, under `--durability fsync`, fsyncs them: after `Ok`
    /// the batch survives a crash (without fsync: a process crash, not a power loss). On an
    /// error the file is cut back to its length before the batch (best effort) and the
    /// buffer is dropped: the caller must not release the batch's outputs.
    pub fn commit(&mut self) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.write_batch(&buf);
        buf.clear();
        self.buf = buf;
        result
    }

    /// Appends `bytes` (whole records, [`encode_record`]) and, under `--durability fsync`,
    /// fsyncs them: [`Journal::commit`] of records the caller buffered ([`encode_record`]). On
    /// an error the file is cut back to its length before the batch (best effort).
    pub fn write_batch(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_unsynced(bytes)?;
        if self.fsync && !bytes.is_empty() {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Appends `bytes` without fsyncing them. On an error the file is cut back to its length
    /// before the batch (best effort).
    fn write_unsynced(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// The shard directory the journal is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `snapshot` as the next generation's snapshot and opens that generation's empty
    /// segment. The older files stay until [`Journal::remove_older`]: a crash between two
    /// shards' snapshots must leave every shard recoverable.
    pub fn start_generation(&mut self, snapshot: &[u8]) -> anyhow::Result<()> {
        let next = self.generation + 1;
        write_atomic(&snapshot_path(&self.dir, next), snapshot)?;
        *self = Journal::open(&self.dir, next, 0, self.fsync)?;
        Ok(())
    }

    /// The generation of the open segment.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Starts the next generation while the shards run (a periodic snapshot): opens the next
    /// segment (fsyncing it and its directory entry under `--durability fsync`) and returns
    /// where its snapshot goes, `snapshot-<next>.pending` (written off the shard thread), which
    /// recovery ignores. Until [`confirm_snapshot`] the older snapshot and
    /// segments stay in force: recovery replays them and the new segment after them. Call
    /// between batches (nothing buffered).
    pub fn begin_generation(&mut self) -> anyhow::Result<PathBuf> {
        let path = self.begin_generation_unsynced()?;
        sync_created(&self.file, &self.dir)
            .with_context(|| format!("fsyncing {}", self.path.display()))?;
        Ok(path)
    }

    /// [`Journal::begin_generation`] without fsyncing the new file and its directory entry.
    fn begin_generation_unsynced(&mut self) -> anyhow::Result<PathBuf> {
        debug_assert!(self.buf.is_empty());
        let next = self.generation + 1;
        *self = Journal::open_unsynced(&self.dir, next, 0, self.fsync)?;
        Ok(pending_path(&self.dir, next))
    }

    /// Removes the snapshots and segments before the current generation.
    pub fn remove_older(&self) -> anyhow::Result<()> {
        remove_before(&self.dir, self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routing::Now;

    fn purge(secs: i64) -> Input {
        Input::Purge {
            now: Now::from_unix_secs(secs),
        }
    }

    /// A segment of `n` purge records; returns (dir, journal path, record offsets).
    fn segment(n: usize) -> (tempfile::TempDir, PathBuf, Vec<u64>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(dir.path(), 0, 0, true).expect("open");
        let mut offsets = Vec::new();
        let mut at = 0u64;
        for i in 0..n {
            offsets.push(at);
            let before = j.buf.len();
            j.append(&purge(1_700_000_000 + i as i64));
            at += (j.buf.len() - before) as u64;
        }
        j.commit().expect("commit");
        (dir, j.path().to_owned(), offsets)
    }

    fn read_all(path: &Path, last: bool) -> anyhow::Result<(u64, Vec<Input>)> {
        let mut got = Vec::new();
        let len = read_segment(path, last, |i| {
            got.push(i);
            Ok(())
        })?;
        Ok((len, got))
    }

    #[test]
    fn records_round_trip_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path, _) = segment(5);
        let (_, got) = read_all(&path, true).expect("reads");
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], purge(1_700_000_004));
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn an_incomplete_last_record_is_truncated() {
        let (_dir, path, offsets) = segment(4);
        let full = fs::metadata(&path).expect("meta").len();
        // Cut the last record in the middle of its payload, then in its header.
        for cut in [full - 2, offsets[3] + 3] {
            let f = OpenOptions::new().write(true).open(&path).expect("open");
            f.set_len(cut).expect("cut");
            let (len, got) = read_all(&path, true).expect("torn tail tolerated");
            assert_eq!(got.len(), 3);
            assert_eq!(len, offsets[3]);
            assert_eq!(fs::metadata(&path).expect("meta").len(), offsets[3]);
        }
        // And the journal accepts appends after the truncation.
        let mut j = Journal::open(path.parent().expect("dir"), 0, offsets[3], true).expect("open");
        j.append(&purge(1));
        j.commit().expect("commit");
        assert_eq!(read_all(&path, true).expect("reads").1.len(), 4);
    }

    #[test]
    fn a_bad_checksum_on_the_last_record_is_a_torn_tail() {
        let (_dir, path, offsets) = segment(3);
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).expect("write");
        let (len, got) = read_all(&path, true).expect("torn tail tolerated");
        assert_eq!((len, got.len()), (offsets[2], 2));
        // Zeros after the end (a file extended but never written) are a torn tail too.
        let mut bytes = fs::read(&path).expect("read");
        bytes.extend_from_slice(&[0; 64]);
        fs::write(&path, &bytes).expect("write");
        assert_eq!(read_all(&path, true).expect("tolerated").1.len(), 2);
    }

    #[test]
    fn damage_before_the_tail_fails_naming_file_and_offset() {
        let (_dir, path, offsets) = segment(5);
        let original = fs::read(&path).expect("read");
        // A flipped payload byte in record 2, and (separately) a broken length in record 1.
        for (at, what) in [
            (offsets[2] as usize + HEADER + 1, "payload"),
            (offsets[1] as usize, "length"),
        ] {
            let mut bytes = original.clone();
            bytes[at] ^= 0x55;
            fs::write(&path, &bytes).expect("write");
            let record = if what == "payload" {
                offsets[2]
            } else {
                offsets[1]
            };
            let e = read_all(&path, true).expect_err("damage refused");
            let text = format!("{e:#}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(&format!("offset {record}")), "{what}: {text}");
            // Nothing was truncated.
            assert_eq!(fs::read(&path).expect("read"), bytes);
        }
    }

    #[test]
    fn a_torn_tail_in_an_older_segment_is_an_error() {
        let (_dir, path, _) = segment(2);
        let full = fs::metadata(&path).expect("meta").len();
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(full - 1).expect("cut");
        assert!(read_all(&path, false).is_err());
    }

    #[test]
    fn atomic_writes_and_boot_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        init_state(&state, &[b"a".to_vec(), b"b".to_vec()]).expect("init");
        assert_eq!(shard_dirs(&state).expect("count"), 2);
        let files = shard_files(&shard_dir(&state, 1)).expect("files");
        assert_eq!(files.generation, 0);
        assert_eq!(fs::read(&files.snapshot).expect("snapshot"), b"b");
        assert_eq!(next_boot(&state).expect("boot"), 1);
        assert_eq!(next_boot(&state).expect("boot"), 2);
        // A new generation supersedes the old one, which is then removed.
        let sdir = shard_dir(&state, 0);
        let mut j = Journal::open(&sdir, 0, 0, true).expect("open");
        j.append(&purge(5));
        j.commit().expect("commit");
        j.start_generation(b"c").expect("generation");
        let files = shard_files(&sdir).expect("files");
        assert_eq!(files.generation, 1);
        assert_eq!(files.segments.len(), 1);
        j.remove_older().expect("remove");
        let names: Vec<_> = fs::read_dir(&sdir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
