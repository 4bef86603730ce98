//! Where results go: standard output, or the file `--output` names.
//!
//! The file is opened before anything is attached, so a typo, a missing directory or a file
//! in the way fails in the first second instead of after a long trace. It is never opened
//! through a symbolic link: pooltrace runs as root, and a link planted in a shared directory
//! would otherwise make it overwrite any file. An existing file is someone else's until
//! `--force` says otherwise.
//!
//! Standard output fails loudly (a full disk loses results), except when its reader has
//! closed the pipe (`| head`): that is the reader's choice, and pooltrace ends quietly.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Seek, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use crate::error::{Error, OutputRefusal, Result};

/// The file named by `--output`, open from the start of the run.
#[derive(Debug)]
pub struct OutputFile {
    file: File,
    path: PathBuf,
    /// This run made the file, so it may remove it again if nothing was written.
    created: bool,
    written: bool,
}

impl OutputFile {
    /// Creates `path`, or with `force` opens the file already there (without truncating it
    /// yet: a run that fails before writing leaves it as it was). Never follows a symbolic
    /// link at `path` itself.
    pub fn open(path: &Path, force: bool) -> Result<Self> {
        let refuse = |reason| Error::Output {
            path: path.to_owned(),
            reason,
        };
        let opened = match open_new(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && force && !is_symlink(path) => {
                open_existing(path).map(|file| (file, false))
            }
            other => other.map(|file| (file, true)),
        };
        match opened {
            Ok((file, created)) => Ok(Self {
                file,
                path: path.to_owned(),
                created,
                written: false,
            }),
            Err(_) if is_symlink(path) => Err(refuse(OutputRefusal::Symlink)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(refuse(OutputRefusal::Exists))
            }
            Err(e) => Err(refuse(OutputRefusal::Io(e))),
        }
    }

    /// Opens the file named by `--output`, if any.
    pub fn open_requested(path: Option<&Path>, force: bool) -> Result<Option<Self>> {
        path.map(|path| Self::open(path, force)).transpose()
    }

    /// Makes `bytes` the whole content of the file.
    pub fn replace_contents(&mut self, bytes: &[u8]) -> Result<()> {
        self.begin()?;
        self.append(bytes)?;
        self.finish()
    }

    /// Empties the file for a run that writes as it goes; from here on it holds this run's
    /// output, even if the run later fails.
    pub fn begin(&mut self) -> Result<()> {
        if self.is_regular()? {
            self.file
                .set_len(0)
                .and_then(|()| self.file.rewind())
                .map_err(|source| self.write_error(source))?;
        }
        self.written = true;
        Ok(())
    }

    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|source| self.write_error(source))
    }

    /// Makes sure the data reached the disk: a full disk or a quota can fail only here.
    pub fn finish(&mut self) -> Result<()> {
        if self.is_regular()? {
            self.file
                .sync_data()
                .map_err(|source| self.write_error(source))?;
        }
        Ok(())
    }

    /// Devices and pipes (with `--force`) cannot be truncated or synced.
    fn is_regular(&self) -> Result<bool> {
        let metadata = self
            .file
            .metadata()
            .map_err(|source| self.write_error(source))?;
        Ok(metadata.is_file())
    }

    fn write_error(&self, source: io::Error) -> Error {
        Error::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// Whether `path` still names the file this run holds open (not something put there
    /// since).
    fn path_is_ours(&self) -> bool {
        match (fs::symlink_metadata(&self.path), self.file.metadata()) {
            (Ok(at_path), Ok(ours)) => at_path.dev() == ours.dev() && at_path.ino() == ours.ino(),
            _ => false,
        }
    }
}

impl Drop for OutputFile {
    /// A run that failed before writing leaves no empty file behind, unless the file was
    /// there before it.
    fn drop(&mut self) {
        if self.created && !self.written && self.path_is_ours() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn open_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opened without blocking: a FIFO with no reader would otherwise hang pooltrace before its
/// signals are handled (it fails with ENXIO instead). The flag is cleared once open.
fn open_existing(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    clear_nonblocking(&file)?;
    Ok(file)
}

fn clear_nonblocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function's caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Status lines on stderr (`pooltrace: ...`), which must never stop a run: after a terminal
/// hangup every write to it fails, and `eprintln!` would panic before the final report is
/// written.
#[macro_export]
macro_rules! status {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// [`status!`] without the newline (multi-line summaries that carry their own).
#[macro_export]
macro_rules! status_text {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Writes `bytes` to standard output, all of them or an error. Every stdout write of
/// pooltrace goes through here, so that a closed pipe is told apart the same way everywhere.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|source| Error::Stdout { source })
}

/// Whether `result` says that stdout's reader has gone; any other error is passed on.
pub fn stdout_closed(result: Result<()>) -> Result<bool> {
    match result {
        Ok(()) => Ok(false),
        Err(error) if error.is_closed_pipe() => Ok(true),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of one test's own, removed with everything in it when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("pooltrace-output-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("scratch dir");
            Self(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn refusal(result: Result<OutputFile>) -> String {
        match result {
            Err(error) => error.to_string(),
            Ok(file) => panic!("{} was opened", file.path.display()),
        }
    }

    #[test]
    fn a_symlink_is_refused_with_or_without_force() {
        let scratch = Scratch::new("symlink");
        let target = scratch.path("symlink-target");
        fs::write(&target, "keep").expect("target");
        let link = scratch.path("symlink");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        for force in [false, true] {
            assert_eq!(
                refusal(OutputFile::open(&link, force)),
                format!(
                    "cannot write {}: it is a symbolic link; pooltrace never writes through one",
                    link.display()
                )
            );
        }
        assert_eq!(fs::read_to_string(&target).expect("target"), "keep");
    }

    #[test]
    fn a_dangling_symlink_is_refused_and_nothing_is_created() {
        let scratch = Scratch::new("dangling");
        let target = scratch.path("dangling-target");
        let link = scratch.path("dangling");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(refusal(OutputFile::open(&link, true)).contains("it is a symbolic link"));
        assert!(!target.exists());
    }

    #[test]
    fn an_existing_file_needs_force_and_is_kept_until_written() {
        let scratch = Scratch::new("existing");
        let path = scratch.path("existing");
        fs::write(&path, "old").expect("existing");
        assert_eq!(
            refusal(OutputFile::open(&path, false)),
            format!(
                "cannot write {}: it already exists (use --force to replace it)",
                path.display()
            )
        );
        drop(OutputFile::open(&path, true).expect("with --force"));
        assert_eq!(fs::read_to_string(&path).expect("kept"), "old");
        let mut file = OutputFile::open(&path, true).expect("with --force");
        file.replace_contents(b"new").expect("written");
        drop(file);
        assert_eq!(fs::read_to_string(&path).expect("replaced"), "new");
    }

    #[test]
    fn a_created_file_is_removed_unless_written() {
        let scratch = Scratch::new("created");
        let path = scratch.path("created");
        drop(OutputFile::open(&path, false).expect("created"));
        assert!(!path.exists());
        let mut file = OutputFile::open(&path, false).expect("created");
        file.begin().expect("begun");
        drop(file);
        assert_eq!(fs::read(&path).expect("kept"), b"");
    }

    #[test]
    fn a_file_put_in_place_of_ours_is_not_removed() {
        let scratch = Scratch::new("replaced");
        let path = scratch.path("replaced");
        let file = OutputFile::open(&path, false).expect("created");
        fs::remove_file(&path).expect("remove");
        fs::write(&path, "someone else's").expect("theirs");
        drop(file);
        assert_eq!(fs::read_to_string(&path).expect("theirs"), "someone else's");
    }

    #[test]
    fn a_missing_directory_is_named_with_the_system_message() {
        let scratch = Scratch::new("missing-dir");
        let path = scratch.path("no-such-dir").join("report.json");
        assert_eq!(
            refusal(OutputFile::open(&path, true)),
            format!("cannot write {}: No such file or directory", path.display())
        );
    }
}
