//! Builds the eBPF read-only filesystem tracer (`bpf/erofs.bpf.c`) with clang. The object is
//! embedded in the agent; the C file needs no kernel or libbpf headers, only clang.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "bpf/erofs.bpf.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("erofs.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let status = Command::new(&clang)
        .args([
            "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-c", source, "-o",
        ])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!("{clang} failed to compile {source} ({s})")),
        Err(e) => fail(&format!(
            "cannot run {clang} ({e}): the eBPF tracer is built with clang; install it \
             (`apt-get install clang`, or `make deps`) or point $CLANG at one"
        )),
    }
}

fn fail(message: &str) -> ! {
    println!("cargo:warning={message}");
    std::process::exit(1);
}
