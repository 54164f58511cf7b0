//! Prints who owns a directory and who may use it (its owner and DACL as SDDL), as
//! `service::windows::install` left it. Windows only; CI runs it under Wine on depot's data
//! directory, where `icacls` is a stub.
//!
//! ```text
//! > data_dir_access C:\ProgramData\depot
//! O:BAD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1301bf;;;S-1-5-80-…)
//! ```

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: data_dir_access <directory>");
        std::process::exit(2);
    };
    match winddown::service::windows::security(std::path::Path::new(&path)) {
        Ok(sddl) => println!("{sddl}"),
        Err(e) => {
            eprintln!("{}: {e}", std::path::Path::new(&path).display());
            std::process::exit(1);
        }
    }
}
