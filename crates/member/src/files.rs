//! `podium member files DIR`: keeps `DIR/role`, `DIR/term` and `DIR/leader` current for
//! applications that read files (an emptyDir shared with them). Each file is written whole and
//! renamed into place, so a reader never sees a torn value.

use std::path::{Path, PathBuf};

use super::{Role, State};

/// The three files' contents for a state.
pub fn contents(state: &State) -> [(&'static str, String); 3] {
    let role = match state.role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Unknown => "unknown",
    };
    [
        ("role", role.to_string()),
        (
            "term",
            state.term.map(|t| t.to_string()).unwrap_or_default(),
        ),
        ("leader", state.leader.clone().unwrap_or_default()),
    ]
}

/// Writes one file by write-and-rename (a few bytes on a local volume: not worth a thread).
fn replace(dir: &Path, name: &str, value: &str) -> std::io::Result<()> {
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, format!("{value}\n"))?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Writes the files for a state; the term goes last on a promotion, first on a demotion, so that
/// a reader of `role` then `term` never pairs `leader` with an older term.
pub fn write(dir: &Path, state: &State) -> std::io::Result<()> {
    let [role, term, leader] = contents(state);
    let order = if state.role == Role::Leader {
        [term, role, leader]
    } else {
        [role, term, leader]
    };
    for (name, value) in order {
        replace(dir, name, &value)?;
    }
    Ok(())
}

/// `podium member files DIR`: rewrites the files on every change, until the pod stops.
pub async fn keep(member: &super::Member, dir: &Path) -> std::io::Result<()> {
    use futures::StreamExt;
    std::fs::create_dir_all(dir)?;
    let mut states = std::pin::pin!(super::changes(member));
    let mut stop = std::pin::pin!(crate::signals::terminated());
    loop {
        tokio::select! {
            s = states.next() => match s {
                Some(s) => write(dir, &s)?,
                None => return Ok(()),
            },
            _ = &mut stop => return Ok(()),
        }
    }
}
