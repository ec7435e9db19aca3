//! Compiles podmortem's `.proto` files with tonic. Needs `protoc` on `PATH`
//! (Debian: `protobuf-compiler`) or named by `$PROTOC`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["proto/cri.proto"], &["proto"])?;
    Ok(())
}
