//! `winddown install|uninstall|start|stop|status`: through the library's service interface.

use crate::cli::InstallOptions;

pub(crate) fn install(_options: InstallOptions) -> i32 {
    eprintln!("winddown install: not yet");
    2
}

pub(crate) fn uninstall(_name: &str) -> i32 {
    2
}

pub(crate) fn start(_name: &str) -> i32 {
    2
}

pub(crate) fn stop(_name: &str) -> i32 {
    2
}

pub(crate) fn status(_name: &str) -> i32 {
    2
}
