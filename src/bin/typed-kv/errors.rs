//! Library errors as the command line tells them: what happened, and what to do about it.

use typed_kv::StorageError;

/// An error message and, where there is one, a hint.
pub(crate) struct Explained {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

/// The message and hint for `e`.
pub(crate) fn explain(e: StorageError) -> Explained {
    let hint = match &e {
        StorageError::StoreNotFound { .. } => {
            Some("check the path; `typed-kv` never creates a store it is asked to read".into())
        }
        StorageError::Locked { .. } => {
            Some("another process (or another handle in one) has the store open; close it and retry".into())
        }
        StorageError::BackendMismatch { found, .. } => {
            Some(format!("leave out --backend to open it as the {found} store it is"))
        }
        StorageError::Corrupt { .. } => Some(
            "the store is damaged where its engine cannot recover it on opening; restore it from a \
             copy (typed-kv copy makes one of a healthy store)"
                .into(),
        ),
        StorageError::NotAStore { .. } => Some("typed-kv opens only directories that typed-kv made".into()),
        StorageError::CorruptCatalog { .. } => Some("`typed-kv verify` lists every damaged entry".into()),
        StorageError::CopyRefused { .. } => {
            Some("pass --overwrite to replace the target's tables of the same names".into())
        }
        StorageError::Busy { .. } => Some("retry when nothing else reads the store".into()),
        _ => None,
    };
    let message = match &e {
        StorageError::Corrupt { .. } => format!("the store is corrupt: {e}"),
        _ => e.to_string(),
    };
    Explained { message, hint }
}
