; ortq's CUDA kernels. SwiGLU, h = silu(g)·u with silu(g) = g·σ(g), and its gradient
; SwiGLUGrad, for float16 tensors; below them RMSNormGrad, Rotary, MaskedSoftmax, RMSNorm and
; DequantBnb4, each with its own comment.
; With s = σ(g): du = dh·g·s and dg = dh·u·s·(1 + g·(1 − s)), each element in float32
; (σ by ex2.approx: relative error ≈ 2^-22, far under float16's 2^-11) and rounded once.
; The …_f16x8 kernels take 8 elements a thread with 16-byte loads and stores (every pointer
; 16-byte aligned, n a multiple of 8); the …_f16 ones one element a thread.
; Hand-written LLVM IR, compiled to PTX by `make kernels` (opt, which inlines the
; alwaysinline helpers, then llc, the NVPTX backend): the product loads the PTX with the CUDA
; driver and needs no CUDA compiler.
target datalayout = "e-i64:64-i128:128-v16:16-v32:32-n16:32:64"
target triple = "nvptx64-nvidia-cuda"

declare i32 @llvm.nvvm.read.ptx.sreg.tid.x()
declare i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
declare i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
declare float @llvm.nvvm.ex2.approx.f(float)
declare <4 x i32> @llvm.nvvm.ldg.global.i.v4i32.p1v4i32(<4 x i32> addrspace(1)*, i32)
declare float @llvm.nvvm.shfl.sync.bfly.f32(i32, float, i32, i32)
declare void @llvm.nvvm.barrier0()

define void @ortq_swiglu_grad_f16(half addrspace(1)* %pg, half addrspace(1)* %pu, half addrspace(1)* %pdh,
                                  half addrspace(1)* %pdg, half addrspace(1)* %pdu, i64 %n) {
entry:
  %tid = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %bid = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %bdim = call i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
  %b = zext i32 %bid to i64
  %d = zext i32 %bdim to i64
  %t = zext i32 %tid to i64
  %bd = mul i64 %b, %d
  %i = add i64 %bd, %t  ; blockIdx.x·blockDim.x + threadIdx.x
  %in = icmp ult i64 %i, %n
  br i1 %in, label %body, label %done
body:
  %ag = getelementptr half, half addrspace(1)* %pg, i64 %i
  %au = getelementptr half, half addrspace(1)* %pu, i64 %i
  %adh = getelementptr half, half addrspace(1)* %pdh, i64 %i
  %adg = getelementptr half, half addrspace(1)* %pdg, i64 %i
  %adu = getelementptr half, half addrspace(1)* %pdu, i64 %i
  %hg = load half, half addrspace(1)* %ag
  %hu = load half, half addrspace(1)* %au
  %hdh = load half, half addrspace(1)* %adh
  %g = fpext half %hg to float
  %u = fpext half %hu to float
  %dh = fpext half %hdh to float
  %ng = fmul float %g, 0xBFF7154760000000
  %e = call float @llvm.nvvm.ex2.approx.f(float %ng)
  %den = fadd float %e, 1.0
  %s = fdiv float 1.0, %den
  %gs = fmul float %g, %s
  %du = fmul float %dh, %gs
  %oms = fsub float 1.0, %s
  %goms = fmul float %g, %oms
  %f = fadd float %goms, 1.0
  %dhu = fmul float %dh, %u
  %dhus = fmul float %dhu, %s
  %dg = fmul float %dhus, %f
  %hdg = fptrunc float %dg to half
  %hdu = fptrunc float %du to half
  store half %hdg, half addrspace(1)* %adg
  store half %hdu, half addrspace(1)* %adu
  br label %done
done:
  ret void
}

define void @ortq_swiglu_grad_f16x8(<8 x half> addrspace(1)* %pg, <8 x half> addrspace(1)* %pu, <8 x half> addrspace(1)* %pdh,
                                    <8 x half> addrspace(1)* %pdg, <8 x half> addrspace(1)* %pdu, i64 %n) {
entry:
  %tid = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %bid = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %bdim = call i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
  %b = zext i32 %bid to i64
  %d = zext i32 %bdim to i64
  %t = zext i32 %tid to i64
  %bd = mul i64 %b, %d
  %i = add i64 %bd, %t  ; blockIdx.x·blockDim.x + threadIdx.x
  %n8 = lshr i64 %n, 3
  %in = icmp ult i64 %i, %n8
  br i1 %in, label %body, label %done
body:
  %ag = getelementptr <8 x half>, <8 x half> addrspace(1)* %pg, i64 %i
  %au = getelementptr <8 x half>, <8 x half> addrspace(1)* %pu, i64 %i
  %adh = getelementptr <8 x half>, <8 x half> addrspace(1)* %pdh, i64 %i
  %adg = getelementptr <8 x half>, <8 x half> addrspace(1)* %pdg, i64 %i
  %adu = getelementptr <8 x half>, <8 x half> addrspace(1)* %pdu, i64 %i
  %wgp = bitcast <8 x half> addrspace(1)* %ag to <4 x i32> addrspace(1)*
  %wg = call <4 x i32> @llvm.nvvm.ldg.global.i.v4i32.p1v4i32(<4 x i32> addrspace(1)* %wgp, i32 16)
  %hg = bitcast <4 x i32> %wg to <8 x half>
  %wup = bitcast <8 x half> addrspace(1)* %au to <4 x i32> addrspace(1)*
  %wu = call <4 x i32> @llvm.nvvm.ldg.global.i.v4i32.p1v4i32(<4 x i32> addrspace(1)* %wup, i32 16)
  %hu = bitcast <4 x i32> %wu to <8 x half>
  %wdhp = bitcast <8 x half> addrspace(1)* %adh to <4 x i32> addrspace(1)*
  %wdh = call <4 x i32> @llvm.nvvm.ldg.global.i.v4i32.p1v4i32(<4 x i32> addrspace(1)* %wdhp, i32 16)
  %hdh = bitcast <4 x i32> %wdh to <8 x half>
  %g = fpext <8 x half> %hg to <8 x float>
  %u = fpext <8 x half> %hu to <8 x float>
  %dh = fpext <8 x half> %hdh to <8 x float>
  %ng = fmul <8 x float> %g, <float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000>
  %x0 = extractelement <8 x float> %ng, i32 0
  %y0 = call float @llvm.nvvm.ex2.approx.f(float %x0)
  %e0 = insertelement <8 x float> undef, float %y0, i32 0
  %x1 = extractelement <8 x float> %ng, i32 1
  %y1 = call float @llvm.nvvm.ex2.approx.f(float %x1)
  %e1 = insertelement <8 x float> %e0, float %y1, i32 1
  %x2 = extractelement <8 x float> %ng, i32 2
  %y2 = call float @llvm.nvvm.ex2.approx.f(float %x2)
  %e2 = insertelement <8 x float> %e1, float %y2, i32 2
  %x3 = extractelement <8 x float> %ng, i32 3
  %y3 = call float @llvm.nvvm.ex2.approx.f(float %x3)
  %e3 = insertelement <8 x float> %e2, float %y3, i32 3
  %x4 = extractelement <8 x float> %ng, i32 4
  %y4 = call float @llvm.nvvm.ex2.approx.f(float %x4)
  %e4 = insertelement <8 x float> %e3, float %y4, i32 4
  %x5 = extractelement <8 x float> %ng, i32 5
  %y5 = call float @llvm.nvvm.ex2.approx.f(float %x5)
  %e5 = insertelement <8 x float> %e4, float %y5, i32 5
  %x6 = extractelement <8 x float> %ng, i32 6
  %y6 = call float @llvm.nvvm.ex2.approx.f(float %x6)
  %e6 = insertelement <8 x float> %e5, float %y6, i32 6
  %x7 = extractelement <8 x float> %ng, i32 7
  %y7 = call float @llvm.nvvm.ex2.approx.f(float %x7)
  %e = insertelement <8 x float> %e6, float %y7, i32 7
  %den = fadd <8 x float> %e, <float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0>
  %s = fdiv <8 x float> <float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0>, %den
  %gs = fmul <8 x float> %g, %s
  %du = fmul <8 x float> %dh, %gs
  %oms = fsub <8 x float> <float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0>, %s
  %goms = fmul <8 x float> %g, %oms
  %f = fadd <8 x float> %goms, <float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0>
  %dhu = fmul <8 x float> %dh, %u
  %dhus = fmul <8 x float> %dhu, %s
  %dg = fmul <8 x float> %dhus, %f
  %hdg = fptrunc <8 x float> %dg to <8 x half>
  %hdu = fptrunc <8 x float> %du to <8 x half>
  %wdg = bitcast <8 x half> %hdg to <4 x i32>
  %wdgp = bitcast <8 x half> addrspace(1)* %adg to <4 x i32> addrspace(1)*
  store <4 x i32> %wdg, <4 x i32> addrspace(1)* %wdgp, align 16
  %wdu = bitcast <8 x half> %hdu to <4 x i32>
  %wdup = bitcast <8 x half> addrspace(1)* %adu to <4 x i32> addrspace(1)*
  store <4 x i32> %wdu, <4 x i32> addrspace(1)* %wdup, align 16
  br label %done
done:
  ret void
}

; SwiGLU: h = g·σ(g)·u, in float32, rounded once (the forward of SwiGLUGrad's function).
define void @ortq_swiglu_f16(half addrspace(1)* %pg, half addrspace(1)* %pu, half addrspace(1)* %ph, i64 %n) {
entry:
  %tid = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %bid = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %bdim = call i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
  %b = zext i32 %bid to i64
  %d = zext i32 %bdim to i64
  %t = zext i32 %tid to i64
  %bd = mul i64 %b, %d
  %i = add i64 %bd, %t  ; blockIdx.x·blockDim.x + threadIdx.x
  %in = icmp ult i64 %i, %n
  br i1 %in, label %body, label %done
body:
  %ag = getelementptr half, half addrspace(1)* %pg, i64 %i
  %au = getelementptr half, half addrspace(1)* %pu, i64 %i
  %ah = getelementptr half, half addrspace(1)* %ph, i64 %i
  %hg = load half, half addrspace(1)* %ag
  %hu = load half, half addrspace(1)* %au
  %g = fpext half %hg to float
  %u = fpext half %hu to float
  %ng = fmul float %g, 0xBFF7154760000000
  %e = call float @llvm.nvvm.ex2.approx.f(float %ng)
  %den = fadd float %e, 1.0
  %s = fdiv float 1.0, %den
  %gs = fmul float %g, %s
  %h = fmul float %gs, %u
  %hh = fptrunc float %h to half
  store half %hh, half addrspace(1)* %ah
  br label %done
done:
  ret void
}

define void @ortq_swiglu_f16x8(<8 x half> addrspace(1)* %pg, <8 x half> addrspace(1)* %pu, <8 x half> addrspace(1)* %ph, i64 %n) {
entry:
  %tid = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %bid = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %bdim = call i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
  %b = zext i32 %bid to i64
  %d = zext i32 %bdim to i64
  %t = zext i32 %tid to i64
  %bd = mul i64 %b, %d
  %i = add i64 %bd, %t  ; blockIdx.x·blockDim.x + threadIdx.x
  %n8 = lshr i64 %n, 3
  %in = icmp ult i64 %i, %n8
  br i1 %in, label %body, label %done
body:
  %ag = getelementptr <8 x half>, <8 x half> addrspace(1)* %pg, i64 %i
  %au = getelementptr <8 x half>, <8 x half> addrspace(1)* %pu, i64 %i
  %ah = getelementptr <8 x half>, <8 x half> addrspace(1)* %ph, i64 %i
  %wgp = bitcast <8 x half> addrspace(1)* %ag to <4 x i32> addrspace(1)*
  %wg = call <4 x i32> @llvm.nvvm.ldg.global.i.v4i32.p1v4i32(<4 x i32> addrspace(1)* %wgp, i32 16)
  %hg = bitcast <4 x i32> %wg to <8 x half>
  %wup = bitcast <8 x half> addrspace(1)* %au to <4 x i32> addrspace(1)*
  %wu = call <4 x i32> @llvm.nvvm.ldg.global.i.v4i32.p1v4i32(<4 x i32> addrspace(1)* %wup, i32 16)
  %hu = bitcast <4 x i32> %wu to <8 x half>
  %g = fpext <8 x half> %hg to <8 x float>
  %u = fpext <8 x half> %hu to <8 x float>
  %ng = fmul <8 x float> %g, <float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000, float 0xBFF7154760000000>
  %x0 = extractelement <8 x float> %ng, i32 0
  %y0 = call float @llvm.nvvm.ex2.approx.f(float %x0)
  %e0 = insertelement <8 x float> undef, float %y0, i32 0
  %x1 = extractelement <8 x float> %ng, i32 1
  %y1 = call float @llvm.nvvm.ex2.approx.f(float %x1)
  %e1 = insertelement <8 x float> %e0, float %y1, i32 1
  %x2 = extractelement <8 x float> %ng, i32 2
  %y2 = call float @llvm.nvvm.ex2.approx.f(float %x2)
  %e2 = insertelement <8 x float> %e1, float %y2, i32 2
  %x3 = extractelement <8 x float> %ng, i32 3
  %y3 = call float @llvm.nvvm.ex2.approx.f(float %x3)
  %e3 = insertelement <8 x float> %e2, float %y3, i32 3
  %x4 = extractelement <8 x float> %ng, i32 4
  %y4 = call float @llvm.nvvm.ex2.approx.f(float %x4)
  %e4 = insertelement <8 x float> %e3, float %y4, i32 4
  %x5 = extractelement <8 x float> %ng, i32 5
  %y5 = call float @llvm.nvvm.ex2.approx.f(float %x5)
  %e5 = insertelement <8 x float> %e4, float %y5, i32 5
  %x6 = extractelement <8 x float> %ng, i32 6
  %y6 = call float @llvm.nvvm.ex2.approx.f(float %x6)
  %e6 = insertelement <8 x float> %e5, float %y6, i32 6
  %x7 = extractelement <8 x float> %ng, i32 7
  %y7 = call float @llvm.nvvm.ex2.approx.f(float %x7)
  %e = insertelement <8 x float> %e6, float %y7, i32 7
  %den = fadd <8 x float> %e, <float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0>
  %s = fdiv <8 x float> <float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0, float 1.0>, %den
  %gs = fmul <8 x float> %g, %s
  %h = fmul <8 x float> %gs, %u
  %hh = fptrunc <8 x float> %h to <8 x half>
  %wh = bitcast <8 x half> %hh to <4 x i32>
  %whp = bitcast <8 x half> addrspace(1)* %ah to <4 x i32> addrspace(1)*
  store <4 x i32> %wh, <4 x i32> addrspace(1)* %whp, align 16
  br label %done
done:
  ret void
}

; RMSNormGrad: the gradient of y = x·r·w (r = 1/rms(x) per row, the norm's inv_std_var) with
; respect to x, for float16 x, w, dy and float32 r over rows of h elements: with g = dy·w
; and x̂ = x·r, dx = r·(g − x̂·mean(g·x̂)), in float32 and rounded once. One block a row: each
; thread sums g·x̂ over the elements tid, tid + blockDim, …; the warps' sums meet in shared
; memory (blockDim a multiple of 32, at most 1024); a second pass over the row writes dx.
@partial = internal addrspace(3) global [32 x float] undef, align 4

define void @ortq_rmsnorm_grad_f16(half addrspace(1)* %x, half addrspace(1)* %w, float addrspace(1)* %r,
                                   half addrspace(1)* %dy, half addrspace(1)* %res, half addrspace(1)* %dx, i64 %rows, i64 %h) {
entry:
  %tid32 = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %bid32 = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %nt32 = call i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
  %row = zext i32 %bid32 to i64
  %tid = zext i32 %tid32 to i64
  %nt = zext i32 %nt32 to i64
  %inrange = icmp ult i64 %row, %rows
  br i1 %inrange, label %start, label %done
start:
  %base = mul i64 %row, %h
  %rp = getelementptr float, float addrspace(1)* %r, i64 %row
  %rr = load float, float addrspace(1)* %rp
  br label %loop1
loop1:
  %i1 = phi i64 [ %tid, %start ], [ %i1n, %body1 ]
  %acc = phi float [ 0.0, %start ], [ %accn, %body1 ]
  %more1 = icmp ult i64 %i1, %h
  br i1 %more1, label %body1, label %reduce
body1:
  %o1 = add i64 %base, %i1
  %px1 = getelementptr half, half addrspace(1)* %x, i64 %o1
  %pd1 = getelementptr half, half addrspace(1)* %dy, i64 %o1
  %pw1 = getelementptr half, half addrspace(1)* %w, i64 %i1
  %hx1 = load half, half addrspace(1)* %px1
  %hd1 = load half, half addrspace(1)* %pd1
  %hw1 = load half, half addrspace(1)* %pw1
  %fx1 = fpext half %hx1 to float
  %fd1 = fpext half %hd1 to float
  %fw1 = fpext half %hw1 to float
  %g1 = fmul float %fd1, %fw1
  %xh1 = fmul float %fx1, %rr
  %gx1 = fmul float %g1, %xh1
  %accn = fadd float %acc, %gx1
  %i1n = add i64 %i1, %nt
  br label %loop1
reduce:
  %as1 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %acc, i32 16, i32 31)
  %av1 = fadd float %acc, %as1
  %as2 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %av1, i32 8, i32 31)
  %av2 = fadd float %av1, %as2
  %as3 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %av2, i32 4, i32 31)
  %av3 = fadd float %av2, %as3
  %as4 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %av3, i32 2, i32 31)
  %av4 = fadd float %av3, %as4
  %as5 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %av4, i32 1, i32 31)
  %ws = fadd float %av4, %as5
  %lane = and i32 %tid32, 31
  %warp = lshr i32 %tid32, 5
  %lane0 = icmp eq i32 %lane, 0
  br i1 %lane0, label %store, label %sync1
store:
  %pp = getelementptr [32 x float], [32 x float] addrspace(3)* @partial, i32 0, i32 %warp
  store float %ws, float addrspace(3)* %pp
  br label %sync1
sync1:
  call void @llvm.nvvm.barrier0()
  %nwarps = lshr i32 %nt32, 5
  %have = icmp ult i32 %lane, %nwarps
  br i1 %have, label %readp, label %total
readp:
  %pl = getelementptr [32 x float], [32 x float] addrspace(3)* @partial, i32 0, i32 %lane
  %pv = load float, float addrspace(3)* %pl
  br label %total
total:
  %part = phi float [ 0.0, %sync1 ], [ %pv, %readp ]
  %bs1 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %part, i32 16, i32 31)
  %bv1 = fadd float %part, %bs1
  %bs2 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %bv1, i32 8, i32 31)
  %bv2 = fadd float %bv1, %bs2
  %bs3 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %bv2, i32 4, i32 31)
  %bv3 = fadd float %bv2, %bs3
  %bs4 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %bv3, i32 2, i32 31)
  %bv4 = fadd float %bv3, %bs4
  %bs5 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %bv4, i32 1, i32 31)
  %sum = fadd float %bv4, %bs5
  %hf = uitofp i64 %h to float
  %m = fdiv float %sum, %hf
  br label %loop2
loop2:
  %i2 = phi i64 [ %tid, %total ], [ %i2n, %body2 ]
  %more2 = icmp ult i64 %i2, %h
  br i1 %more2, label %body2, label %done
body2:
  %o2 = add i64 %base, %i2
  %px2 = getelementptr half, half addrspace(1)* %x, i64 %o2
  %pd2 = getelementptr half, half addrspace(1)* %dy, i64 %o2
  %pw2 = getelementptr half, half addrspace(1)* %w, i64 %i2
  %pdx = getelementptr half, half addrspace(1)* %dx, i64 %o2
  %hx2 = load half, half addrspace(1)* %px2
  %hd2 = load half, half addrspace(1)* %pd2
  %hw2 = load half, half addrspace(1)* %pw2
  %fx2 = fpext half %hx2 to float
  %fd2 = fpext half %hd2 to float
  %fw2 = fpext half %hw2 to float
  %g2 = fmul float %fd2, %fw2
  %xh2 = fmul float %fx2, %rr
  %xm = fmul float %xh2, %m
  %d = fsub float %g2, %xm
  %dxf0 = fmul float %d, %rr
  %dxf = call float @plus_res(half addrspace(1)* %res, i64 %o2, float %dxf0)
  %dxh = fptrunc float %dxf to half
  store half %dxh, half addrspace(1)* %pdx
  %i2n = add i64 %i2, %nt
  br label %loop2
done:
  ret void
}

; ---- Rotary: the rotary embedding of attention's q or k (non-interleaved halves) ----
; For each row of D = 2·half channels at position p = pos[row's batch, row's token]:
; y[i] = x[i]·cos[p, i] − x[i + half]·sin[p, i] and y[i + half] = x[i + half]·cos[p, i] +
; x[i]·sin[p, i], in float32 and rounded once. Rows are [batch, heads, seq] (bnsh = 1: the
; token index of row r is (r / (heads·seq))·seq + r mod seq, div = heads·seq) or [batch,
; seq, heads] (bnsh = 0: r / heads, div = heads). A position outside [0, P) writes NaN.
; One work item is 8 channel pairs (…_f16x8: half a multiple of 8, 16-byte aligned
; pointers; n = rows·half/8, u = half/8) or one pair (…_f16: n = rows·half, u = half).

; rotaryPos returns the position of work item i's row, clamped into [0, P), and whether it was
; in range; row = i / u.
define internal { i64, i1 } @rotary_pos(i64 %row, i64 addrspace(1)* %pos, i64 %div, i64 %seq, i64 %bnsh, i64 %P) alwaysinline {
  %q = udiv i64 %row, %div
  %qs = mul i64 %q, %seq
  %rs = urem i64 %row, %seq
  %p4 = add i64 %qs, %rs
  %is4 = icmp ne i64 %bnsh, 0
  %pi = select i1 %is4, i64 %p4, i64 %q
  %pp = getelementptr i64, i64 addrspace(1)* %pos, i64 %pi
  %p = load i64, i64 addrspace(1)* %pp
  %ok = icmp ult i64 %p, %P  ; unsigned: negative positions fail too
  %pc = select i1 %ok, i64 %p, i64 0
  %r0 = insertvalue { i64, i1 } undef, i64 %pc, 0
  %r1 = insertvalue { i64, i1 } %r0, i1 %ok, 1
  ret { i64, i1 } %r1
}

define internal i64 @global_id() alwaysinline {
  %tid = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %bid = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %bdim = call i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
  %b = zext i32 %bid to i64
  %d = zext i32 %bdim to i64
  %t = zext i32 %tid to i64
  %bd = mul i64 %b, %d
  %i = add i64 %bd, %t
  ret i64 %i
}

define internal <8 x float> @load8(<8 x half> addrspace(1)* %base, i64 %i) alwaysinline {
  %a = getelementptr <8 x half>, <8 x half> addrspace(1)* %base, i64 %i
  %ap = bitcast <8 x half> addrspace(1)* %a to <4 x i32> addrspace(1)*
  %w = call <4 x i32> @llvm.nvvm.ldg.global.i.v4i32.p1v4i32(<4 x i32> addrspace(1)* %ap, i32 16)
  %h = bitcast <4 x i32> %w to <8 x half>
  %f = fpext <8 x half> %h to <8 x float>
  ret <8 x float> %f
}

define internal void @store8(<8 x half> addrspace(1)* %base, i64 %i, <8 x float> %v) alwaysinline {
  %a = getelementptr <8 x half>, <8 x half> addrspace(1)* %base, i64 %i
  %h = fptrunc <8 x float> %v to <8 x half>
  %w = bitcast <8 x half> %h to <4 x i32>
  %ap = bitcast <8 x half> addrspace(1)* %a to <4 x i32> addrspace(1)*
  store <4 x i32> %w, <4 x i32> addrspace(1)* %ap, align 16
  ret void
}

define void @ortq_rotary_f16x8(<8 x half> addrspace(1)* %x, <8 x half> addrspace(1)* %cos, <8 x half> addrspace(1)* %sin,
                               i64 addrspace(1)* %pos, <8 x half> addrspace(1)* %y,
                               i64 %n, i64 %u, i64 %div, i64 %seq, i64 %bnsh, i64 %P) {
entry:
  %i = call i64 @global_id()
  %in = icmp ult i64 %i, %n
  br i1 %in, label %body, label %done
body:
  %row = udiv i64 %i, %u
  %c = urem i64 %i, %u
  %pr = call { i64, i1 } @rotary_pos(i64 %row, i64 addrspace(1)* %pos, i64 %div, i64 %seq, i64 %bnsh, i64 %P)
  %p = extractvalue { i64, i1 } %pr, 0
  %ok = extractvalue { i64, i1 } %pr, 1
  %r2 = shl i64 %row, 1
  %rb = mul i64 %r2, %u
  %i1 = add i64 %rb, %c
  %i2 = add i64 %i1, %u
  %pu = mul i64 %p, %u
  %ic = add i64 %pu, %c
  %x1 = call <8 x float> @load8(<8 x half> addrspace(1)* %x, i64 %i1)
  %x2 = call <8 x float> @load8(<8 x half> addrspace(1)* %x, i64 %i2)
  %cv = call <8 x float> @load8(<8 x half> addrspace(1)* %cos, i64 %ic)
  %sv = call <8 x float> @load8(<8 x half> addrspace(1)* %sin, i64 %ic)
  %a1 = fmul <8 x float> %x1, %cv
  %b1 = fmul <8 x float> %x2, %sv
  %y1 = fsub <8 x float> %a1, %b1
  %a2 = fmul <8 x float> %x2, %cv
  %b2 = fmul <8 x float> %x1, %sv
  %y2 = fadd <8 x float> %a2, %b2
  %nan = bitcast <8 x i32> <i32 2143289344, i32 2143289344, i32 2143289344, i32 2143289344, i32 2143289344, i32 2143289344, i32 2143289344, i32 2143289344> to <8 x float>
  %o1 = select i1 %ok, <8 x float> %y1, <8 x float> %nan
  %o2 = select i1 %ok, <8 x float> %y2, <8 x float> %nan
  call void @store8(<8 x half> addrspace(1)* %y, i64 %i1, <8 x float> %o1)
  call void @store8(<8 x half> addrspace(1)* %y, i64 %i2, <8 x float> %o2)
  br label %done
done:
  ret void
}

define void @ortq_rotary_f16(half addrspace(1)* %x, half addrspace(1)* %cos, half addrspace(1)* %sin,
                             i64 addrspace(1)* %pos, half addrspace(1)* %y,
                             i64 %n, i64 %u, i64 %div, i64 %seq, i64 %bnsh, i64 %P) {
entry:
  %i = call i64 @global_id()
  %in = icmp ult i64 %i, %n
  br i1 %in, label %body, label %done
body:
  %row = udiv i64 %i, %u
  %c = urem i64 %i, %u
  %pr = call { i64, i1 } @rotary_pos(i64 %row, i64 addrspace(1)* %pos, i64 %div, i64 %seq, i64 %bnsh, i64 %P)
  %p = extractvalue { i64, i1 } %pr, 0
  %ok = extractvalue { i64, i1 } %pr, 1
  %r2 = shl i64 %row, 1
  %rb = mul i64 %r2, %u
  %i1 = add i64 %rb, %c
  %i2 = add i64 %i1, %u
  %pu = mul i64 %p, %u
  %ic = add i64 %pu, %c
  %ax1 = getelementptr half, half addrspace(1)* %x, i64 %i1
  %ax2 = getelementptr half, half addrspace(1)* %x, i64 %i2
  %ac = getelementptr half, half addrspace(1)* %cos, i64 %ic
  %as = getelementptr half, half addrspace(1)* %sin, i64 %ic
  %hx1 = load half, half addrspace(1)* %ax1
  %hx2 = load half, half addrspace(1)* %ax2
  %hc = load half, half addrspace(1)* %ac
  %hs = load half, half addrspace(1)* %as
  %x1 = fpext half %hx1 to float
  %x2 = fpext half %hx2 to float
  %cv = fpext half %hc to float
  %sv = fpext half %hs to float
  %a1 = fmul float %x1, %cv
  %b1 = fmul float %x2, %sv
  %y1 = fsub float %a1, %b1
  %a2 = fmul float %x2, %cv
  %b2 = fmul float %x1, %sv
  %y2 = fadd float %a2, %b2
  %nan = bitcast i32 2143289344 to float
  %o1 = select i1 %ok, float %y1, float %nan
  %o2 = select i1 %ok, float %y2, float %nan
  %h1 = fptrunc float %o1 to half
  %h2 = fptrunc float %o2 to half
  %ay1 = getelementptr half, half addrspace(1)* %y, i64 %i1
  %ay2 = getelementptr half, half addrspace(1)* %y, i64 %i2
  store half %h1, half addrspace(1)* %ay1
  store half %h2, half addrspace(1)* %ay2
  br label %done
done:
  ret void
}

; ---- MaskedSoftmax: P = softmax(S + M) over the last axis ----
; S [batch, heads, q, L] float16, M (additive, float16) broadcast over any of its first three
; axes: row r = (b, h, i) of S reads M's row b·sb + h·sh + i·sq (a stride 0 where M's axis
; is 1). One warp a row: the lanes take the row's max of S + M, then the sum of exp(S + M −
; max), then write exp(S + M − max)/sum — in float32 (exp by ex2.approx), rounded once.
; …_f16x8 reads 8 elements a lane and step (L a multiple of 8, 16-byte aligned rows; l =
; L/8), …_f16 one (l = L).

declare float @llvm.maxnum.f32(float, float)

define internal float @warp_max(float %v) alwaysinline {
  %s1 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %v, i32 16, i32 31)
  %v1 = call float @llvm.maxnum.f32(float %v, float %s1)
  %s2 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %v1, i32 8, i32 31)
  %v2 = call float @llvm.maxnum.f32(float %v1, float %s2)
  %s3 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %v2, i32 4, i32 31)
  %v3 = call float @llvm.maxnum.f32(float %v2, float %s3)
  %s4 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %v3, i32 2, i32 31)
  %v4 = call float @llvm.maxnum.f32(float %v3, float %s4)
  %s5 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %v4, i32 1, i32 31)
  %v5 = call float @llvm.maxnum.f32(float %v4, float %s5)
  ret float %v5
}

define internal float @warp_sum(float %v) alwaysinline {
  %s1 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %v, i32 16, i32 31)
  %v1 = fadd float %v, %s1
  %s2 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %v1, i32 8, i32 31)
  %v2 = fadd float %v1, %s2
  %s3 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %v2, i32 4, i32 31)
  %v3 = fadd float %v2, %s3
  %s4 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %v3, i32 2, i32 31)
  %v4 = fadd float %v3, %s4
  %s5 = call float @llvm.nvvm.shfl.sync.bfly.f32(i32 -1, float %v4, i32 1, i32 31)
  %v5 = fadd float %v4, %s5
  ret float %v5
}

; softmax_row returns (the row of S, the row of M) in elements of the kernel's width, or
; row = -1 past the last row; the warp's lane in %lane.
define internal { i64, i64, i64 } @softmax_row(i64 %rows, i64 %heads, i64 %q, i64 %sb, i64 %sh, i64 %sq) alwaysinline {
  %g = call i64 @global_id()
  %row = lshr i64 %g, 5
  %lane = and i64 %g, 31
  %in = icmp ult i64 %row, %rows
  %hq = mul i64 %heads, %q
  %b = udiv i64 %row, %hq
  %rq = udiv i64 %row, %q
  %h = urem i64 %rq, %heads
  %i = urem i64 %row, %q
  %mb = mul i64 %b, %sb
  %mh = mul i64 %h, %sh
  %mi = mul i64 %i, %sq
  %m1 = add i64 %mb, %mh
  %m = add i64 %m1, %mi
  %r = select i1 %in, i64 %row, i64 -1
  %o0 = insertvalue { i64, i64, i64 } undef, i64 %r, 0
  %o1 = insertvalue { i64, i64, i64 } %o0, i64 %m, 1
  %o2 = insertvalue { i64, i64, i64 } %o1, i64 %lane, 2
  ret { i64, i64, i64 } %o2
}

define internal <8 x float> @exp8(<8 x float> %v, float %mx) alwaysinline {
  %mi = insertelement <8 x float> undef, float %mx, i32 0
  %mv = shufflevector <8 x float> %mi, <8 x float> undef, <8 x i32> zeroinitializer
  %d = fsub <8 x float> %v, %mv
  %t = fmul <8 x float> %d, <float 0x3FF7154760000000, float 0x3FF7154760000000, float 0x3FF7154760000000, float 0x3FF7154760000000, float 0x3FF7154760000000, float 0x3FF7154760000000, float 0x3FF7154760000000, float 0x3FF7154760000000>
  %t0 = extractelement <8 x float> %t, i32 0
  %y0 = call float @llvm.nvvm.ex2.approx.f(float %t0)
  %e0 = insertelement <8 x float> undef, float %y0, i32 0
  %t1 = extractelement <8 x float> %t, i32 1
  %y1 = call float @llvm.nvvm.ex2.approx.f(float %t1)
  %e1 = insertelement <8 x float> %e0, float %y1, i32 1
  %t2 = extractelement <8 x float> %t, i32 2
  %y2 = call float @llvm.nvvm.ex2.approx.f(float %t2)
  %e2 = insertelement <8 x float> %e1, float %y2, i32 2
  %t3 = extractelement <8 x float> %t, i32 3
  %y3 = call float @llvm.nvvm.ex2.approx.f(float %t3)
  %e3 = insertelement <8 x float> %e2, float %y3, i32 3
  %t4 = extractelement <8 x float> %t, i32 4
  %y4 = call float @llvm.nvvm.ex2.approx.f(float %t4)
  %e4 = insertelement <8 x float> %e3, float %y4, i32 4
  %t5 = extractelement <8 x float> %t, i32 5
  %y5 = call float @llvm.nvvm.ex2.approx.f(float %t5)
  %e5 = insertelement <8 x float> %e4, float %y5, i32 5
  %t6 = extractelement <8 x float> %t, i32 6
  %y6 = call float @llvm.nvvm.ex2.approx.f(float %t6)
  %e6 = insertelement <8 x float> %e5, float %y6, i32 6
  %t7 = extractelement <8 x float> %t, i32 7
  %y7 = call float @llvm.nvvm.ex2.approx.f(float %t7)
  %e7 = insertelement <8 x float> %e6, float %y7, i32 7
  ret <8 x float> %e7
}

define internal float @hmax8(<8 x float> %v) alwaysinline {
  %a0 = extractelement <8 x float> %v, i32 0
  %a1 = extractelement <8 x float> %v, i32 1
  %a2 = extractelement <8 x float> %v, i32 2
  %a3 = extractelement <8 x float> %v, i32 3
  %a4 = extractelement <8 x float> %v, i32 4
  %a5 = extractelement <8 x float> %v, i32 5
  %a6 = extractelement <8 x float> %v, i32 6
  %a7 = extractelement <8 x float> %v, i32 7
  %b0 = call float @llvm.maxnum.f32(float %a0, float %a1)
  %b1 = call float @llvm.maxnum.f32(float %a2, float %a3)
  %b2 = call float @llvm.maxnum.f32(float %a4, float %a5)
  %b3 = call float @llvm.maxnum.f32(float %a6, float %a7)
  %c0 = call float @llvm.maxnum.f32(float %b0, float %b1)
  %c1 = call float @llvm.maxnum.f32(float %b2, float %b3)
  %d = call float @llvm.maxnum.f32(float %c0, float %c1)
  ret float %d
}

define internal float @hsum8(<8 x float> %v) alwaysinline {
  %a0 = extractelement <8 x float> %v, i32 0
  %a1 = extractelement <8 x float> %v, i32 1
  %a2 = extractelement <8 x float> %v, i32 2
  %a3 = extractelement <8 x float> %v, i32 3
  %a4 = extractelement <8 x float> %v, i32 4
  %a5 = extractelement <8 x float> %v, i32 5
  %a6 = extractelement <8 x float> %v, i32 6
  %a7 = extractelement <8 x float> %v, i32 7
  %b0 = fadd float %a0, %a1
  %b1 = fadd float %a2, %a3
  %b2 = fadd float %a4, %a5
  %b3 = fadd float %a6, %a7
  %c0 = fadd float %b0, %b1
  %c1 = fadd float %b2, %b3
  %d = fadd float %c0, %c1
  ret float %d
}

define void @ortq_masked_softmax_f16x8(<8 x half> addrspace(1)* %s, <8 x half> addrspace(1)* %m, <8 x half> addrspace(1)* %p,
                                       i64 %rows, i64 %l, i64 %heads, i64 %q, i64 %sb, i64 %sh, i64 %sq) {
entry:
  %rr = call { i64, i64, i64 } @softmax_row(i64 %rows, i64 %heads, i64 %q, i64 %sb, i64 %sh, i64 %sq)
  %row = extractvalue { i64, i64, i64 } %rr, 0
  %mrow = extractvalue { i64, i64, i64 } %rr, 1
  %lane = extractvalue { i64, i64, i64 } %rr, 2
  %in = icmp ne i64 %row, -1
  br i1 %in, label %start, label %done
start:
  %sbase = mul i64 %row, %l
  %mbase = mul i64 %mrow, %l
  br label %loop1
loop1:
  %j1 = phi i64 [ %lane, %start ], [ %j1n, %body1 ]
  %mx = phi float [ 0xFFF0000000000000, %start ], [ %mxn, %body1 ]
  %more1 = icmp ult i64 %j1, %l
  br i1 %more1, label %body1, label %red1
body1:
  %si1 = add i64 %sbase, %j1
  %mi1 = add i64 %mbase, %j1
  %sv1 = call <8 x float> @load8(<8 x half> addrspace(1)* %s, i64 %si1)
  %mv1 = call <8 x float> @load8(<8 x half> addrspace(1)* %m, i64 %mi1)
  %v1 = fadd <8 x float> %sv1, %mv1
  %h1 = call float @hmax8(<8 x float> %v1)
  %mxn = call float @llvm.maxnum.f32(float %mx, float %h1)
  %j1n = add i64 %j1, 32
  br label %loop1
red1:
  %rowmax = call float @warp_max(float %mx)
  br label %loop2
loop2:
  %j2 = phi i64 [ %lane, %red1 ], [ %j2n, %body2 ]
  %sum = phi float [ 0.0, %red1 ], [ %sumn, %body2 ]
  %more2 = icmp ult i64 %j2, %l
  br i1 %more2, label %body2, label %red2
body2:
  %si2 = add i64 %sbase, %j2
  %mi2 = add i64 %mbase, %j2
  %sv2 = call <8 x float> @load8(<8 x half> addrspace(1)* %s, i64 %si2)
  %mv2 = call <8 x float> @load8(<8 x half> addrspace(1)* %m, i64 %mi2)
  %v2 = fadd <8 x float> %sv2, %mv2
  %e2 = call <8 x float> @exp8(<8 x float> %v2, float %rowmax)
  %h2 = call float @hsum8(<8 x float> %e2)
  %sumn = fadd float %sum, %h2
  %j2n = add i64 %j2, 32
  br label %loop2
red2:
  %rowsum = call float @warp_sum(float %sum)
  %inv = fdiv float 1.0, %rowsum
  %ii = insertelement <8 x float> undef, float %inv, i32 0
  %iv = shufflevector <8 x float> %ii, <8 x float> undef, <8 x i32> zeroinitializer
  br label %loop3
loop3:
  %j3 = phi i64 [ %lane, %red2 ], [ %j3n, %body3 ]
  %more3 = icmp ult i64 %j3, %l
  br i1 %more3, label %body3, label %done
body3:
  %si3 = add i64 %sbase, %j3
  %mi3 = add i64 %mbase, %j3
  %sv3 = call <8 x float> @load8(<8 x half> addrspace(1)* %s, i64 %si3)
  %mv3 = call <8 x float> @load8(<8 x half> addrspace(1)* %m, i64 %mi3)
  %v3 = fadd <8 x float> %sv3, %mv3
  %e3 = call <8 x float> @exp8(<8 x float> %v3, float %rowmax)
  %pv = fmul <8 x float> %e3, %iv
  call void @store8(<8 x half> addrspace(1)* %p, i64 %si3, <8 x float> %pv)
  %j3n = add i64 %j3, 32
  br label %loop3
done:
  ret void
}

define void @ortq_masked_softmax_f16(half addrspace(1)* %s, half addrspace(1)* %m, half addrspace(1)* %p,
                                     i64 %rows, i64 %l, i64 %heads, i64 %q, i64 %sb, i64 %sh, i64 %sq) {
entry:
  %rr = call { i64, i64, i64 } @softmax_row(i64 %rows, i64 %heads, i64 %q, i64 %sb, i64 %sh, i64 %sq)
  %row = extractvalue { i64, i64, i64 } %rr, 0
  %mrow = extractvalue { i64, i64, i64 } %rr, 1
  %lane = extractvalue { i64, i64, i64 } %rr, 2
  %in = icmp ne i64 %row, -1
  br i1 %in, label %start, label %done
start:
  %sbase = mul i64 %row, %l
  %mbase = mul i64 %mrow, %l
  br label %loop1
loop1:
  %j1 = phi i64 [ %lane, %start ], [ %j1n, %body1 ]
  %mx = phi float [ 0xFFF0000000000000, %start ], [ %mxn, %body1 ]
  %more1 = icmp ult i64 %j1, %l
  br i1 %more1, label %body1, label %red1
body1:
  %v1 = call float @masked_at(half addrspace(1)* %s, half addrspace(1)* %m, i64 %sbase, i64 %mbase, i64 %j1)
  %mxn = call float @llvm.maxnum.f32(float %mx, float %v1)
  %j1n = add i64 %j1, 32
  br label %loop1
red1:
  %rowmax = call float @warp_max(float %mx)
  br label %loop2
loop2:
  %j2 = phi i64 [ %lane, %red1 ], [ %j2n, %body2 ]
  %sum = phi float [ 0.0, %red1 ], [ %sumn, %body2 ]
  %more2 = icmp ult i64 %j2, %l
  br i1 %more2, label %body2, label %red2
body2:
  %v2 = call float @masked_at(half addrspace(1)* %s, half addrspace(1)* %m, i64 %sbase, i64 %mbase, i64 %j2)
  %d2 = fsub float %v2, %rowmax
  %t2 = fmul float %d2, 0x3FF7154760000000
  %e2 = call float @llvm.nvvm.ex2.approx.f(float %t2)
  %sumn = fadd float %sum, %e2
  %j2n = add i64 %j2, 32
  br label %loop2
red2:
  %rowsum = call float @warp_sum(float %sum)
  %inv = fdiv float 1.0, %rowsum
  br label %loop3
loop3:
  %j3 = phi i64 [ %lane, %red2 ], [ %j3n, %body3 ]
  %more3 = icmp ult i64 %j3, %l
  br i1 %more3, label %body3, label %done
body3:
  %v3 = call float @masked_at(half addrspace(1)* %s, half addrspace(1)* %m, i64 %sbase, i64 %mbase, i64 %j3)
  %d3 = fsub float %v3, %rowmax
  %t3 = fmul float %d3, 0x3FF7154760000000
  %e3 = call float @llvm.nvvm.ex2.approx.f(float %t3)
  %pv = fmul float %e3, %inv
  %ph = fptrunc float %pv to half
  %si3 = add i64 %sbase, %j3
  %ap = getelementptr half, half addrspace(1)* %p, i64 %si3
  store half %ph, half addrspace(1)* %ap
  %j3n = add i64 %j3, 32
  br label %loop3
done:
  ret void
}

; masked_at returns S[sbase + j] + M[mbase + j] in float32.
define internal float @masked_at(half addrspace(1)* %s, half addrspace(1)* %m, i64 %sbase, i64 %mbase, i64 %j) alwaysinline {
  %si = add i64 %sbase, %j
  %mi = add i64 %mbase, %j
  %as = getelementptr half, half addrspace(1)* %s, i64 %si
  %am = getelementptr half, half addrspace(1)* %m, i64 %mi
  %hs = load half, half addrspace(1)* %as
  %hm = load half, half addrspace(1)* %am
  %fs = fpext half %hs to float
  %fm = fpext half %hm to float
  %v = fadd float %fs, %fm
  ret float %v
}

; plus_res returns v + res[i] (v where res is null).
define internal float @plus_res(half addrspace(1)* %res, i64 %i, float %v) alwaysinline {
entry:
  %none = icmp eq half addrspace(1)* %res, null
  br i1 %none, label %out, label %add
add:
  %a = getelementptr half, half addrspace(1)* %res, i64 %i
  %h = load half, half addrspace(1)* %a
  %f = fpext half %h to float
  %s = fadd float %v, %f
  br label %out
out:
  %o = phi float [ %v, %entry ], [ %s, %add ]
  ret float %o
}

define internal <8 x float> @plus_res8(<8 x half> addrspace(1)* %res, i64 %i, <8 x float> %v) alwaysinline {
entry:
  %none = icmp eq <8 x half> addrspace(1)* %res, null
  br i1 %none, label %out, label %add
add:
  %f = call <8 x float> @load8(<8 x half> addrspace(1)* %res, i64 %i)
  %s = fadd <8 x float> %v, %f
  br label %out
out:
  %o = phi <8 x float> [ %v, %entry ], [ %s, %add ]
  ret <8 x float> %o
}

define internal <8 x float> @splat8(float %v) alwaysinline {
  %i = insertelement <8 x float> undef, float %v, i32 0
  %s = shufflevector <8 x float> %i, <8 x float> undef, <8 x i32> zeroinitializer
  ret <8 x float> %s
}

; block_sum returns the sum of v over the block's threads (blockDim a multiple of 32, at
; most 1024), through @partial; once a kernel (a second call would need a barrier first).
define internal float @block_sum(float %v) alwaysinline {
entry:
  %tid = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %nt = call i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
  %ws = call float @warp_sum(float %v)
  %lane = and i32 %tid, 31
  %warp = lshr i32 %tid, 5
  %lane0 = icmp eq i32 %lane, 0
  br i1 %lane0, label %store, label %sync
store:
  %pp = getelementptr [32 x float], [32 x float] addrspace(3)* @partial, i32 0, i32 %warp
  store float %ws, float addrspace(3)* %pp
  br label %sync
sync:
  call void @llvm.nvvm.barrier0()
  %nwarps = lshr i32 %nt, 5
  %have = icmp ult i32 %lane, %nwarps
  br i1 %have, label %read, label %total
read:
  %pl = getelementptr [32 x float], [32 x float] addrspace(3)* @partial, i32 0, i32 %lane
  %pv = load float, float addrspace(3)* %pl
  br label %total
total:
  %part = phi float [ 0.0, %sync ], [ %pv, %read ]
  %sum = call float @warp_sum(float %part)
  ret float %sum
}

; RMSNormGrad, 8 elements a thread and step (h a multiple of 8, 16-byte aligned rows; h8 =
; h/8): the same as ortq_rmsnorm_grad_f16.
define void @ortq_rmsnorm_grad_f16x8(<8 x half> addrspace(1)* %x, <8 x half> addrspace(1)* %w, float addrspace(1)* %r,
                                     <8 x half> addrspace(1)* %dy, <8 x half> addrspace(1)* %res, <8 x half> addrspace(1)* %dx,
                                     i64 %rows, i64 %h8, i64 %h) {
entry:
  %tid32 = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %bid32 = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %nt32 = call i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
  %row = zext i32 %bid32 to i64
  %tid = zext i32 %tid32 to i64
  %nt = zext i32 %nt32 to i64
  %inrange = icmp ult i64 %row, %rows
  br i1 %inrange, label %start, label %done
start:
  %base = mul i64 %row, %h8
  %rp = getelementptr float, float addrspace(1)* %r, i64 %row
  %rr = load float, float addrspace(1)* %rp
  %rv = call <8 x float> @splat8(float %rr)
  br label %loop1
loop1:
  %i1 = phi i64 [ %tid, %start ], [ %i1n, %body1 ]
  %acc = phi float [ 0.0, %start ], [ %accn, %body1 ]
  %more1 = icmp ult i64 %i1, %h8
  br i1 %more1, label %body1, label %reduce
body1:
  %o1 = add i64 %base, %i1
  %x1 = call <8 x float> @load8(<8 x half> addrspace(1)* %x, i64 %o1)
  %d1 = call <8 x float> @load8(<8 x half> addrspace(1)* %dy, i64 %o1)
  %w1 = call <8 x float> @load8(<8 x half> addrspace(1)* %w, i64 %i1)
  %g1 = fmul <8 x float> %d1, %w1
  %xh1 = fmul <8 x float> %x1, %rv
  %gx1 = fmul <8 x float> %g1, %xh1
  %s1 = call float @hsum8(<8 x float> %gx1)
  %accn = fadd float %acc, %s1
  %i1n = add i64 %i1, %nt
  br label %loop1
reduce:
  %sum = call float @block_sum(float %acc)
  %hf = uitofp i64 %h to float
  %m = fdiv float %sum, %hf
  %mv = call <8 x float> @splat8(float %m)
  br label %loop2
loop2:
  %i2 = phi i64 [ %tid, %reduce ], [ %i2n, %body2 ]
  %more2 = icmp ult i64 %i2, %h8
  br i1 %more2, label %body2, label %done
body2:
  %o2 = add i64 %base, %i2
  %x2 = call <8 x float> @load8(<8 x half> addrspace(1)* %x, i64 %o2)
  %d2 = call <8 x float> @load8(<8 x half> addrspace(1)* %dy, i64 %o2)
  %w2 = call <8 x float> @load8(<8 x half> addrspace(1)* %w, i64 %i2)
  %g2 = fmul <8 x float> %d2, %w2
  %xh2 = fmul <8 x float> %x2, %rv
  %xm = fmul <8 x float> %xh2, %mv
  %df = fsub <8 x float> %g2, %xm
  %dx0 = fmul <8 x float> %df, %rv
  %dxv = call <8 x float> @plus_res8(<8 x half> addrspace(1)* %res, i64 %o2, <8 x float> %dx0)
  call void @store8(<8 x half> addrspace(1)* %dx, i64 %o2, <8 x float> %dxv)
  %i2n = add i64 %i2, %nt
  br label %loop2
done:
  ret void
}

; ---- RMSNorm: y = x·r·w with r = 1/sqrt(mean(x²) + eps) per row, and r (float32) ----
; ONNX Runtime's SimplifiedLayerNormalization over the last axis with float32 statistics
; (stash_type 1): float16 x [..., h] and w [h]. One block a row: the row's sum of squares
; meets in @partial; a second pass writes y (in float32, rounded once). …_f16x8: h a multiple
; of 8 and 16-byte aligned rows, h8 = h/8 vectors a row; …_f16: h8 = h.
declare float @llvm.sqrt.f32(float)

define void @ortq_rmsnorm_f16x8(<8 x half> addrspace(1)* %x, <8 x half> addrspace(1)* %w, <8 x half> addrspace(1)* %y,
                                float addrspace(1)* %r, i64 %rows, i64 %h8, i64 %h, float %eps) {
entry:
  %tid32 = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %bid32 = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %nt32 = call i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
  %row = zext i32 %bid32 to i64
  %tid = zext i32 %tid32 to i64
  %nt = zext i32 %nt32 to i64
  %inrange = icmp ult i64 %row, %rows
  br i1 %inrange, label %start, label %done
start:
  %base = mul i64 %row, %h8
  br label %loop1
loop1:
  %i1 = phi i64 [ %tid, %start ], [ %i1n, %body1 ]
  %acc = phi float [ 0.0, %start ], [ %accn, %body1 ]
  %more1 = icmp ult i64 %i1, %h8
  br i1 %more1, label %body1, label %reduce
body1:
  %o1 = add i64 %base, %i1
  %x1 = call <8 x float> @load8(<8 x half> addrspace(1)* %x, i64 %o1)
  %sq = fmul <8 x float> %x1, %x1
  %s1 = call float @hsum8(<8 x float> %sq)
  %accn = fadd float %acc, %s1
  %i1n = add i64 %i1, %nt
  br label %loop1
reduce:
  %sum = call float @block_sum(float %acc)
  %rr = call float @inv_rms(float %sum, i64 %h, float %eps, float addrspace(1)* %r, i64 %row, i64 %tid)
  %rv = call <8 x float> @splat8(float %rr)
  br label %loop2
loop2:
  %i2 = phi i64 [ %tid, %reduce ], [ %i2n, %body2 ]
  %more2 = icmp ult i64 %i2, %h8
  br i1 %more2, label %body2, label %done
body2:
  %o2 = add i64 %base, %i2
  %x2 = call <8 x float> @load8(<8 x half> addrspace(1)* %x, i64 %o2)
  %w2 = call <8 x float> @load8(<8 x half> addrspace(1)* %w, i64 %i2)
  %xr = fmul <8 x float> %x2, %rv
  %yv = fmul <8 x float> %xr, %w2
  call void @store8(<8 x half> addrspace(1)* %y, i64 %o2, <8 x float> %yv)
  %i2n = add i64 %i2, %nt
  br label %loop2
done:
  ret void
}

; inv_rms returns 1/sqrt(sum/h + eps) (IEEE sqrt and division) and thread 0 stores it in r[row].
define internal float @inv_rms(float %sum, i64 %h, float %eps, float addrspace(1)* %r, i64 %row, i64 %tid) alwaysinline {
entry:
  %hf = uitofp i64 %h to float
  %ms = fdiv float %sum, %hf
  %me = fadd float %ms, %eps
  %sd = call float @llvm.sqrt.f32(float %me)
  %rr = fdiv float 1.0, %sd
  %first = icmp eq i64 %tid, 0
  br i1 %first, label %store, label %out
store:
  %rp = getelementptr float, float addrspace(1)* %r, i64 %row
  store float %rr, float addrspace(1)* %rp
  br label %out
out:
  ret float %rr
}

define void @ortq_rmsnorm_f16(half addrspace(1)* %x, half addrspace(1)* %w, half addrspace(1)* %y,
                              float addrspace(1)* %r, i64 %rows, i64 %h8, i64 %h, float %eps) {
entry:
  %tid32 = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %bid32 = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %nt32 = call i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
  %row = zext i32 %bid32 to i64
  %tid = zext i32 %tid32 to i64
  %nt = zext i32 %nt32 to i64
  %inrange = icmp ult i64 %row, %rows
  br i1 %inrange, label %start, label %done
start:
  %base = mul i64 %row, %h
  br label %loop1
loop1:
  %i1 = phi i64 [ %tid, %start ], [ %i1n, %body1 ]
  %acc = phi float [ 0.0, %start ], [ %accn, %body1 ]
  %more1 = icmp ult i64 %i1, %h
  br i1 %more1, label %body1, label %reduce
body1:
  %o1 = add i64 %base, %i1
  %p1 = getelementptr half, half addrspace(1)* %x, i64 %o1
  %hx1 = load half, half addrspace(1)* %p1
  %x1 = fpext half %hx1 to float
  %sq = fmul float %x1, %x1
  %accn = fadd float %acc, %sq
  %i1n = add i64 %i1, %nt
  br label %loop1
reduce:
  %sum = call float @block_sum(float %acc)
  %rr = call float @inv_rms(float %sum, i64 %h, float %eps, float addrspace(1)* %r, i64 %row, i64 %tid)
  br label %loop2
loop2:
  %i2 = phi i64 [ %tid, %reduce ], [ %i2n, %body2 ]
  %more2 = icmp ult i64 %i2, %h
  br i1 %more2, label %body2, label %done
body2:
  %o2 = add i64 %base, %i2
  %p2 = getelementptr half, half addrspace(1)* %x, i64 %o2
  %pw = getelementptr half, half addrspace(1)* %w, i64 %i2
  %py = getelementptr half, half addrspace(1)* %y, i64 %o2
  %hx2 = load half, half addrspace(1)* %p2
  %hw2 = load half, half addrspace(1)* %pw
  %x2 = fpext half %hx2 to float
  %w2 = fpext half %hw2 to float
  %xr = fmul float %x2, %rr
  %yv = fmul float %xr, %w2
  %yh = fptrunc float %yv to half
  store half %yh, half addrspace(1)* %py
  %i2n = add i64 %i2, %nt
  br label %loop2
done:
  ret void
}

; ---- DequantBnb4: bitsandbytes' 4-bit weight (NF4/FP4) to float16 ----
; Byte j of the packed weight holds elements 2j and 2j + 1: W[2j], W[2j + 1] = lut[byte j]
; (a [256, 2] float16 table: the data type's code of each nibble) times absmax[2j / bs] (the
; element's block), in float32 and rounded once. …_f16x4: 4 bytes a thread, one 16-byte
; store of 8 elements (m a multiple of 4, bs of 8; bytes 4-byte and W 16-byte aligned; n =
; m/4); …_f16: a byte a thread (n = m).

; lut_pair returns lut[(word >> shift) & 255] as float32.
define internal <2 x float> @lut_pair(<2 x half> addrspace(1)* %lut, i32 %word, i32 %shift) alwaysinline {
  %sh = lshr i32 %word, %shift
  %b = and i32 %sh, 255
  %bi = zext i32 %b to i64
  %p = getelementptr <2 x half>, <2 x half> addrspace(1)* %lut, i64 %bi
  %h = load <2 x half>, <2 x half> addrspace(1)* %p, align 4
  %f = fpext <2 x half> %h to <2 x float>
  ret <2 x float> %f
}

define internal float @block_absmax(half addrspace(1)* %absmax, i64 %elem, i64 %bs) alwaysinline {
  %blk = udiv i64 %elem, %bs
  %pa = getelementptr half, half addrspace(1)* %absmax, i64 %blk
  %ha = load half, half addrspace(1)* %pa
  %a = fpext half %ha to float
  ret float %a
}

define void @ortq_dequant_bnb4_f16x4(i32 addrspace(1)* %bytes, <2 x half> addrspace(1)* %lut, half addrspace(1)* %absmax,
                                     <8 x half> addrspace(1)* %w, i64 %n, i64 %bs) {
entry:
  %i = call i64 @global_id()
  %in = icmp ult i64 %i, %n
  br i1 %in, label %body, label %done
body:
  %pb = getelementptr i32, i32 addrspace(1)* %bytes, i64 %i
  %word = load i32, i32 addrspace(1)* %pb, align 4
  %e = shl i64 %i, 3
  %a = call float @block_absmax(half addrspace(1)* %absmax, i64 %e, i64 %bs)
  %p0 = call <2 x float> @lut_pair(<2 x half> addrspace(1)* %lut, i32 %word, i32 0)
  %p1 = call <2 x float> @lut_pair(<2 x half> addrspace(1)* %lut, i32 %word, i32 8)
  %p2 = call <2 x float> @lut_pair(<2 x half> addrspace(1)* %lut, i32 %word, i32 16)
  %p3 = call <2 x float> @lut_pair(<2 x half> addrspace(1)* %lut, i32 %word, i32 24)
  %q01 = shufflevector <2 x float> %p0, <2 x float> %p1, <4 x i32> <i32 0, i32 1, i32 2, i32 3>
  %q23 = shufflevector <2 x float> %p2, <2 x float> %p3, <4 x i32> <i32 0, i32 1, i32 2, i32 3>
  %v = shufflevector <4 x float> %q01, <4 x float> %q23, <8 x i32> <i32 0, i32 1, i32 2, i32 3, i32 4, i32 5, i32 6, i32 7>
  %av = call <8 x float> @splat8(float %a)
  %wv = fmul <8 x float> %v, %av
  call void @store8(<8 x half> addrspace(1)* %w, i64 %i, <8 x float> %wv)
  br label %done
done:
  ret void
}

define void @ortq_dequant_bnb4_f16(i8 addrspace(1)* %bytes, <2 x half> addrspace(1)* %lut, half addrspace(1)* %absmax,
                                   <2 x half> addrspace(1)* %w, i64 %n, i64 %bs) {
entry:
  %i = call i64 @global_id()
  %in = icmp ult i64 %i, %n
  br i1 %in, label %body, label %done
body:
  %pb = getelementptr i8, i8 addrspace(1)* %bytes, i64 %i
  %byte = load i8, i8 addrspace(1)* %pb
  %word = zext i8 %byte to i32
  %e = shl i64 %i, 1
  %a = call float @block_absmax(half addrspace(1)* %absmax, i64 %e, i64 %bs)
  %p = call <2 x float> @lut_pair(<2 x half> addrspace(1)* %lut, i32 %word, i32 0)
  %ai = insertelement <2 x float> undef, float %a, i32 0
  %av = shufflevector <2 x float> %ai, <2 x float> undef, <2 x i32> zeroinitializer
  %wv = fmul <2 x float> %p, %av
  %wh = fptrunc <2 x float> %wv to <2 x half>
  %pw = getelementptr <2 x half>, <2 x half> addrspace(1)* %w, i64 %i
  store <2 x half> %wh, <2 x half> addrspace(1)* %pw, align 4
  br label %done
done:
  ret void
}

!nvvm.annotations = !{!0, !1, !2, !3, !4, !5, !6, !7, !8, !9, !10, !11, !12, !13}
!0 = !{void (half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, i64)* @ortq_swiglu_grad_f16, !"kernel", i32 1}
!1 = !{void (<8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, i64)* @ortq_swiglu_grad_f16x8, !"kernel", i32 1}
!2 = !{void (half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, i64)* @ortq_swiglu_f16, !"kernel", i32 1}
!3 = !{void (<8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, i64)* @ortq_swiglu_f16x8, !"kernel", i32 1}
!4 = !{void (half addrspace(1)*, half addrspace(1)*, float addrspace(1)*, half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, i64, i64)* @ortq_rmsnorm_grad_f16, !"kernel", i32 1}
!5 = !{void (<8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, i64 addrspace(1)*, <8 x half> addrspace(1)*, i64, i64, i64, i64, i64, i64)* @ortq_rotary_f16x8, !"kernel", i32 1}
!6 = !{void (half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, i64 addrspace(1)*, half addrspace(1)*, i64, i64, i64, i64, i64, i64)* @ortq_rotary_f16, !"kernel", i32 1}
!7 = !{void (<8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, i64, i64, i64, i64, i64, i64, i64)* @ortq_masked_softmax_f16x8, !"kernel", i32 1}
!8 = !{void (half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, i64, i64, i64, i64, i64, i64, i64)* @ortq_masked_softmax_f16, !"kernel", i32 1}
!9 = !{void (<8 x half> addrspace(1)*, <8 x half> addrspace(1)*, float addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, i64, i64, i64)* @ortq_rmsnorm_grad_f16x8, !"kernel", i32 1}
!10 = !{void (<8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, float addrspace(1)*, i64, i64, i64, float)* @ortq_rmsnorm_f16x8, !"kernel", i32 1}
!11 = !{void (half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, float addrspace(1)*, i64, i64, i64, float)* @ortq_rmsnorm_f16, !"kernel", i32 1}
!12 = !{void (i32 addrspace(1)*, <2 x half> addrspace(1)*, half addrspace(1)*, <8 x half> addrspace(1)*, i64, i64)* @ortq_dequant_bnb4_f16x4, !"kernel", i32 1}
!13 = !{void (i8 addrspace(1)*, <2 x half> addrspace(1)*, half addrspace(1)*, <2 x half> addrspace(1)*, i64, i64)* @ortq_dequant_bnb4_f16, !"kernel", i32 1}
