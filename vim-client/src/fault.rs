//! VIM faults: the typed kind of a SOAP fault or a failed task's `LocalizedMethodFault`.

use crate::xml::{self, Element};

/// The kind of a VIM fault, from its `xsi:type`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// Wrong user name or password.
    InvalidLogin,
    /// The session is not logged in (or expired).
    NotAuthenticated,
    /// A managed object reference does not name an existing object.
    ManagedObjectNotFound,
    /// The VM is in the wrong power state for the operation.
    InvalidPowerState,
    /// A file that was to be created exists.
    FileAlreadyExists,
    /// A file was not found.
    FileNotFound,
    /// Any other file fault (`FileFault` and subtypes not listed here).
    FileFault,
    /// An argument was invalid.
    InvalidArgument,
    /// Something named in the request does not exist.
    NotFound,
    /// The object is busy with another task.
    TaskInProgress,
    /// An object with that name exists already.
    DuplicateName,
    /// The object is in a state that does not allow the operation.
    InvalidState,
    /// The user lacks a privilege.
    NoPermission,
    /// The server does not support the operation.
    NotSupported,
    /// The request was malformed.
    InvalidRequest,
    /// An unexpected server-side error.
    SystemError,
    /// Any other fault type, by its VIM type name.
    Other(String),
}

impl FaultKind {
    /// The kind for a VIM fault type name (`InvalidLogin`, `FileNotFound`, ...).
    pub fn from_type_name(name: &str) -> FaultKind {
        let name = name
            .strip_suffix("Fault")
            .filter(|n| !n.is_empty() && *n != "File")
            .unwrap_or(name);
        match name {
            "InvalidLogin" => FaultKind::InvalidLogin,
            "NotAuthenticated" => FaultKind::NotAuthenticated,
            "ManagedObjectNotFound" => FaultKind::ManagedObjectNotFound,
            "InvalidPowerState" => FaultKind::InvalidPowerState,
            "FileAlreadyExists" => FaultKind::FileAlreadyExists,
            "FileNotFound" => FaultKind::FileNotFound,
            "FileFault"
            | "CannotAccessFile"
            | "FileLocked"
            | "NotADirectory"
            | "NotAFile"
            | "FileTooLarge"
            | "FileBackedPortNotSupported"
            | "CannotCreateFile"
            | "CannotDeleteFile" => FaultKind::FileFault,
            "InvalidArgument" => FaultKind::InvalidArgument,
            "NotFound" => FaultKind::NotFound,
            "TaskInProgress" => FaultKind::TaskInProgress,
            "DuplicateName" | "AlreadyExists" => FaultKind::DuplicateName,
            "InvalidState" | "InvalidVmState" | "InvalidHostState" | "InvalidDatastoreState" => {
                FaultKind::InvalidState
            }
            "NoPermission" => FaultKind::NoPermission,
            "NotSupported" | "NotImplemented" | "MethodNotFound" => FaultKind::NotSupported,
            "InvalidRequest" | "InvalidType" | "UnexpectedFault" => FaultKind::InvalidRequest,
            "SystemError" | "RuntimeFault" => FaultKind::SystemError,
            other => FaultKind::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultKind::Other(name) => f.write_str(name),
            kind => write!(f, "{kind:?}"),
        }
    }
}

/// Reads a fault from a SOAP `Fault` element (`faultstring` + `detail`).
pub(crate) fn from_soap_fault(fault: &Element) -> crate::Error {
    let fault_string = fault.text_at("faultstring").unwrap_or("").trim().to_owned();
    let detail = fault.get("detail").and_then(|d| d.children.first());
    let kind = match detail {
        Some(d) => FaultKind::from_type_name(d.type_name().unwrap_or(d.local())),
        None => FaultKind::Other(
            fault
                .text_at("faultcode")
                .unwrap_or("unknown")
                .trim()
                .to_owned(),
        ),
    };
    crate::Error::Fault {
        kind,
        fault_string,
        detail_xml: detail.map(xml::to_string),
    }
}

/// Reads a fault from a `LocalizedMethodFault` (a failed task's `info.error`).
pub(crate) fn from_localized_method_fault(error: &Element) -> crate::Error {
    let fault = error.get("fault");
    let kind = fault
        .and_then(|f| f.type_name())
        .map(FaultKind::from_type_name)
        .unwrap_or_else(|| FaultKind::Other("LocalizedMethodFault".into()));
    let fault_string = error
        .text_at("localizedMessage")
        .map(str::to_owned)
        .or_else(|| {
            fault
                .and_then(|f| f.get("faultMessage"))
                .and_then(|m| m.text_at("message"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| kind.to_string());
    crate::Error::Fault {
        kind,
        fault_string,
        detail_xml: fault.map(xml::to_string),
    }
}
