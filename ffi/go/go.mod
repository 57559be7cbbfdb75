module example.invalid/verity/ffi/go

go 1.19
