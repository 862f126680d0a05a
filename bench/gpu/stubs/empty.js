// The GPU benchmark's stand-in for packages its code path never calls (bench/gpu_build.sh).
export {};
