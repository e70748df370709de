; ortq's CUDA kernels. SwiGLU, h = silu(g)·u with silu(g) = g·σ(g), and its gradient
; SwiGLUGrad, for float16 tensors (RMSNormGrad below).
; With s = σ(g): du = dh·g·s and dg = dh·u·s·(1 + g·(1 − s)), each element in float32
; (σ by ex2.approx: relative error ≈ 2^-22, far under float16's 2^-11) and rounded once.
; The …_f16x8 kernels take 8 elements a thread with 16-byte loads and stores (every pointer
; 16-byte aligned, n a multiple of 8); the …_f16 ones one element a thread.
; Hand-written LLVM IR, compiled to PTX by `make kernels` (llc, the NVPTX backend): the
; product loads the PTX with the CUDA driver and needs no CUDA compiler.
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
                                   half addrspace(1)* %dy, half addrspace(1)* %dx, i64 %rows, i64 %h) {
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
  %dxf = fmul float %d, %rr
  %dxh = fptrunc float %dxf to half
  store half %dxh, half addrspace(1)* %pdx
  %i2n = add i64 %i2, %nt
  br label %loop2
done:
  ret void
}

!nvvm.annotations = !{!0, !1, !2, !3, !4}
!0 = !{void (half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, i64)* @ortq_swiglu_grad_f16, !"kernel", i32 1}
!1 = !{void (<8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, i64)* @ortq_swiglu_grad_f16x8, !"kernel", i32 1}
!2 = !{void (half addrspace(1)*, half addrspace(1)*, half addrspace(1)*, i64)* @ortq_swiglu_f16, !"kernel", i32 1}
!3 = !{void (<8 x half> addrspace(1)*, <8 x half> addrspace(1)*, <8 x half> addrspace(1)*, i64)* @ortq_swiglu_f16x8, !"kernel", i32 1}
!4 = !{void (half addrspace(1)*, half addrspace(1)*, float addrspace(1)*, half addrspace(1)*, half addrspace(1)*, i64, i64)* @ortq_rmsnorm_grad_f16, !"kernel", i32 1}
