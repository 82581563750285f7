// Shared by the build scripts of every package that links LibTorch (`include!`d).
//
// torch-sys tells its direct dependents where LibTorch's libraries are (DEP_TCH_LIBTORCH_LIB).
// Two link arguments make a built binary just work:
// - an rpath to that folder, so `rill` runs without LD_LIBRARY_PATH (an LD_LIBRARY_PATH set by
//   the user still wins, e.g. to use another machine's torch);
// - `--no-as-needed` around `-ltorch_cuda`: nothing in Rill references a symbol of
//   libtorch_cuda, so the linker's default `--as-needed` would drop it, and CUDA would then
//   silently report itself unavailable. With it, `device: cuda` reaches the GPU.
fn link_torch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
