"""An interactive viewer in a self-contained page: NiiVue (vendored, `assets/niivue/`), offline.

`viewer_html(cases)` gives an HTML fragment for `report.page.build_page` sections: one WebGL canvas
(NiiVue, three orthogonal planes plus a 3D render), the volumes of a case as background and its label
maps as an overlay with an opacity slider, the LAX views as textured planes in their true 3D position,
the surface meshes, and a frame slider for cine. Everything is embedded: NiiVue's single-file bundle
(pinned version, licence beside it), volumes as gzipped uint8 NIfTI (base64), meshes and LAX planes as
raw arrays (base64). A page's Content-Security-Policy forbids every request outside the file.

Plain data accepted (`cases`: {case name: case}):

- case["volumes"]: list of {"name", "kind": "image" | "labels", "nifti": base64 str} (`volume_entry`);
  the first image is the background, the first labels the overlay.
- case["meshes"]: list of {"name", "pts", "tris", "rgba"} (`mesh_entry`, `lax_plane_entry`), "frames":
  base64 per-frame vertex colours for a LAX plane.
- case["frames"]: the frame numbers (the volumes' 4th axis), case["frame_ms"]: their times or None.
- case["message"]: shown instead of the viewer (e.g. the outputs were deleted).
"""

from __future__ import annotations

import base64
import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from cardiorecon.report.page import CSP, esc  # noqa: F401 - CSP kept importable from here

ASSETS = Path(__file__).parent / "assets" / "niivue"
#: Embedded payload of one page at most (bytes of base64): volumes lose frames past it.
PAGE_BUDGET = 16_000_000
LABEL_COLOURS = {1: (230, 40, 40), 2: (40, 200, 60), 3: (50, 120, 255)}  # LV cavity, LV myocardium, RV cavity
LABEL_NAMES = ["background", "LV cavity", "LV myocardium", "RV cavity"]
#: Content-Security-Policy of a page with a viewer: nothing outside the file (data: and blob: only).


@lru_cache(maxsize=1)
def niivue_js() -> str:
    return (ASSETS / "niivue.umd.js").read_text(encoding="utf-8")


def niivue_version() -> str:
    return json.loads((ASSETS / "VERSION.json").read_text())["version"]


def to_uint8(data: np.ndarray, labels: bool = False) -> np.ndarray:
    """Labels as they are (uint8); images windowed at their 0.5th and 99.5th percentiles to 0..255."""
    data = np.asarray(data)
    if labels:
        return np.clip(data, 0, 255).astype(np.uint8)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(data.shape, np.uint8)
    lo, hi = np.percentile(finite, [0.5, 99.5])
    scaled = (np.nan_to_num(data, nan=lo) - lo) / max(float(hi - lo), 1e-6)
    return np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)


def nifti_b64(data: np.ndarray, affine: np.ndarray) -> str:
    """A gzipped NIfTI-1 (uint8, sform and qform set) as base64."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data, np.uint8), np.asarray(affine, float))
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return base64.b64encode(gzip.compress(img.to_bytes(), compresslevel=6)).decode()


def crop_to_box(data: np.ndarray, affine: np.ndarray, box_affine: np.ndarray, box_shape: Sequence[int],
                margin_mm: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """(data, affine) of `data` cropped in-plane to the world box of a grid (box_affine, box_shape) plus a
    margin: the heart region of the working grid on an input grid."""
    from cardiorecon.geometry import voxel_to_world, world_to_voxel

    X, Y, Z = box_shape[:3]
    corners = np.array(np.meshgrid([0, X - 1], [0, Y - 1], [0, Z - 1], indexing="ij")).reshape(3, -1).T
    ijk = world_to_voxel(affine, voxel_to_world(box_affine, corners))
    px = np.sqrt((np.asarray(affine)[:3, :2] ** 2).sum(0))
    lo = np.floor(ijk[:, :2].min(0) - margin_mm / px).astype(int)
    hi = np.ceil(ijk[:, :2].max(0) + margin_mm / px).astype(int) + 1
    lo = np.clip(lo, 0, np.array(data.shape[:2]) - 1)
    hi = np.clip(hi, lo + 1, np.array(data.shape[:2]))
    out = np.asarray(data)[lo[0]:hi[0], lo[1]:hi[1]]
    a = np.array(affine, float)
    a[:3, 3] = voxel_to_world(affine, np.array([lo[0], lo[1], 0.0]))
    return out, a


def volume_entry(name: str, data: np.ndarray, affine: np.ndarray, labels: bool = False) -> dict:
    return {"name": name, "kind": "labels" if labels else "image",
            "nifti": nifti_b64(to_uint8(data, labels), affine)}


def _b64(a: np.ndarray, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()


def mesh_entry(name: str, vertices: np.ndarray, faces: np.ndarray, rgb: Sequence[int], opacity: float = 0.6) -> dict:
    """A surface mesh (world mm vertices, triangle faces) with one colour."""
    return {"name": name, "pts": _b64(vertices, "<f4"), "tris": _b64(faces, "<u4"),
            "rgba": [int(c) for c in rgb] + [255], "opacity": float(opacity)}


def lax_plane_entry(name: str, view, frames: Sequence[int], num_frames: int, max_px: int = 96) -> dict:
    """A LAX view as a grid of vertices at its pixels' world positions (its true 3D place), coloured by its
    image: one grey level per vertex and per SAX frame (`phase.lax_frame` pairs them)."""
    from cardiorecon.geometry import voxel_to_world
    from cardiorecon.phase import lax_frame

    H, W = view.spatial_shape[:2]
    step = max(1, int(np.ceil(max(H, W) / max_px)))
    ii, jj = np.arange(0, H, step), np.arange(0, W, step)
    gi, gj = np.meshgrid(ii, jj, indexing="ij")
    pts = voxel_to_world(view.affine, np.stack([gi, gj, np.zeros_like(gi)], -1).reshape(-1, 3).astype(float))
    h, w = len(ii), len(jj)
    idx = np.arange(h * w).reshape(h, w)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    stack = np.stack([np.asarray(lax_frame(view, t, num_frames), np.float32)[::step, ::step][:h, :w]
                      for t in frames], -1)
    grey = to_uint8(stack)
    colours = [_b64(np.repeat(grey[..., k].reshape(-1, 1), 4, 1) * np.array([1, 1, 1, 0]) + np.array([0, 0, 0, 255]),
                    np.uint8) for k in range(grey.shape[-1])]
    return {"name": name, "pts": _b64(pts, "<f4"), "tris": _b64(tris, "<u4"), "frames": colours, "opacity": 1.0}


def case_size(case: dict) -> int:
    return len(json.dumps(case))


def viewer_html(cases: dict[str, dict], vid: str = "viewer", title: str = "") -> str:
    """The viewer fragment (NiiVue's bundle included): a canvas, its controls and the cases' data. A case
    with a "message" (or no volume) shows the message, never a blank canvas."""
    payload = json.dumps({"cases": cases, "labels": LABEL_NAMES,
                          "colours": {str(k): v for k, v in LABEL_COLOURS.items()}}).replace("</", "<\\/")
    options = "".join(f"<option>{esc(c)}</option>" for c in cases)
    case_select = f"<label>case <select class='nv-case'>{options}</select></label>" if len(cases) > 1 else ""
    return (f"<div class='nv-viewer' id='{esc(vid)}' data-state='loading'>"
            f"<div class='controls' style='display:flex;flex-wrap:wrap;gap:.4em 1.2em;align-items:center;margin:.4em 0'>"
            f"{case_select}<label>image <select class='nv-image'></select></label>"
            "<label>labels <select class='nv-labels'></select></label>"
            "<label>opacity <input class='nv-opacity' type='range' min='0' max='100' value='45'></label>"
            "<label>frame <input class='nv-frame' type='range' min='0' max='0' value='0'></label>"
            "<span class='nv-where note'></span>"
            "<label><input class='nv-meshes' type='checkbox' checked> surfaces</label>"
            "<label><input class='nv-lax' type='checkbox' checked> LAX planes</label>"
            "<label>view <select class='nv-layout'><option value='3'>3 planes + 3D</option>"
            "<option value='0'>axial</option><option value='1'>coronal</option><option value='2'>sagittal</option>"
            "<option value='4'>3D</option></select></label></div>"
            "<div class='nv-message box fail' hidden></div>"
            "<div class='nv-wrap' style='width:100%;height:min(70vh,640px);background:#000'>"
            f"<canvas class='nv-canvas' id='{esc(vid)}-canvas' aria-label='{esc(title or 'volume viewer')}'></canvas></div>"
            f"<p class='note'>Drag on a plane to move the crosshair, right-drag to window, scroll to page through "
            f"slices; drag the 3D view to rotate. Labels: LV cavity red, LV myocardium green, RV cavity blue. "
            f"Viewer: NiiVue {esc(niivue_version())} (BSD-2-Clause), embedded; it works offline.</p>"
            f"<script type='application/json' class='nv-data'>{payload}</script></div>"
            f"<script>{niivue_js()}</script><script>{VIEWER_JS}</script>")


VIEWER_JS = r"""
(function(){
 function b64buf(s){var bin=atob(s),n=bin.length,u=new Uint8Array(n);for(var i=0;i<n;i++){u[i]=bin.charCodeAt(i);}return u.buffer;}
 document.querySelectorAll('.nv-viewer').forEach(function(root){
  var data=JSON.parse(root.querySelector('.nv-data').textContent);
  var msg=root.querySelector('.nv-message'), wrap=root.querySelector('.nv-wrap');
  function fail(text){msg.textContent=text;msg.hidden=false;wrap.style.display='none';root.setAttribute('data-state','message');}
  var names=Object.keys(data.cases);
  if(!names.length){fail('Nothing to show: no volume was embedded in this page.');return;}
  if(typeof niivue==='undefined'){fail('The viewer library did not load.');return;}
  var cv=root.querySelector('canvas');
  var probe=document.createElement('canvas').getContext('webgl2');
  if(!probe){fail('This browser has no WebGL2: the viewer cannot draw. The files linked above open in ITK-SNAP or 3D Slicer.');return;}
  var t0=performance.now(), violations=0;
  document.addEventListener('securitypolicyviolation',function(){violations++;root.setAttribute('data-csp-violations',String(violations));});
  var nv=new niivue.Niivue({backColor:[0,0,0,1],show3Dcrosshair:true,isColorbar:false,multiplanarShowRender:1,
                            dragAndDropEnabled:false,loadingText:'loading',meshThicknessOn2D:1.5});
  var sel={img:root.querySelector('.nv-image'),lab:root.querySelector('.nv-labels'),op:root.querySelector('.nv-opacity'),
           fr:root.querySelector('.nv-frame'),mesh:root.querySelector('.nv-meshes'),lax:root.querySelector('.nv-lax'),
           lay:root.querySelector('.nv-layout'),cs:root.querySelector('.nv-case'),where:root.querySelector('.nv-where')};
  var cache={}, meshObjs=[], laxObjs=[], current=null;
  var lut={R:[0],G:[0],B:[0],A:[0],I:[0],labels:data.labels};
  Object.keys(data.colours).forEach(function(k){var c=data.colours[k];lut.R.push(c[0]);lut.G.push(c[1]);lut.B.push(c[2]);lut.A.push(255);lut.I.push(+k);});
  async function image(ci,vi){var key=ci+'/'+vi;if(!cache[key]){var v=data.cases[ci].volumes[vi];
    var im=await niivue.NVImage.new(b64buf(v.nifti),v.name+'.nii.gz');
    if(v.kind==='labels'){im.setColormapLabel(lut);}else{im.colormap='gray';}
    cache[key]=im;}return cache[key];}
  function frameNow(){return +sel.fr.value;}
  async function show(){
   var c=data.cases[current];
   nv.volumes.slice().forEach(function(v){nv.removeVolume(v);});
   var bi=+sel.img.value, li=sel.lab.value===''?-1:+sel.lab.value;
   var bg=await image(current,bi);bg.opacity=1;nv.addVolume(bg);
   if(li>=0){var ov=await image(current,li);ov.opacity=sel.op.value/100;nv.addVolume(ov);}
   nv.volumes.forEach(function(v){if(v.nFrame4D>1){nv.setFrame4D(v.id,Math.min(frameNow(),v.nFrame4D-1));}});
   nv.updateGLVolume();
  }
  function setFrame(){
   var c=data.cases[current],f=frameNow();
   nv.volumes.forEach(function(v){if(v.nFrame4D>1){nv.setFrame4D(v.id,Math.min(f,v.nFrame4D-1));}});
   laxObjs.forEach(function(o){var cols=o.entry.frames;if(!cols||!cols.length){return;}
    o.mesh.rgba255=new Uint8Array(b64buf(cols[Math.min(f,cols.length-1)]));o.mesh.updateMesh(nv.gl);});
   var fr=c.frames[f],ms=c.frame_ms?c.frame_ms[f]:null;
   sel.where.textContent='frame '+fr+(ms!==null&&ms!==undefined?' ('+Math.round(ms)+' ms from the trigger)':'')+', '+(f+1)+' of '+c.frames.length;
   nv.drawScene();
  }
  function meshes(){
   meshObjs.concat(laxObjs).forEach(function(o){nv.removeMesh(o.mesh);});meshObjs=[];laxObjs=[];
   var c=data.cases[current];
   (c.meshes||[]).forEach(function(e){
    var pts=new Float32Array(b64buf(e.pts)),tris=new Uint32Array(b64buf(e.tris));
    var rgba=e.frames?new Uint8Array(b64buf(e.frames[0])):new Uint8Array(e.rgba);
    var m=new niivue.NVMesh(pts,tris,e.name,rgba,e.opacity,true,nv.gl);
    (e.frames?laxObjs:meshObjs).push({mesh:m,entry:e});
    if((e.frames&&sel.lax.checked)||(!e.frames&&sel.mesh.checked)){nv.addMesh(m);}
   });
  }
  function toggle(){
   meshObjs.concat(laxObjs).forEach(function(o){nv.removeMesh(o.mesh);});
   meshObjs.forEach(function(o){if(sel.mesh.checked){nv.addMesh(o.mesh);}});
   laxObjs.forEach(function(o){if(sel.lax.checked){nv.addMesh(o.mesh);}});
   setFrame();
  }
  async function pick(name){
   current=name;var c=data.cases[name];
   if(c.message||!c.volumes||!c.volumes.length){fail(c.message||('No volume for '+name+'.'));return;}
   msg.hidden=true;wrap.style.display='';
   sel.img.innerHTML='';sel.lab.innerHTML='<option value="">none</option>';
   c.volumes.forEach(function(v,i){var o=document.createElement('option');o.value=i;o.textContent=v.name;
    (v.kind==='labels'?sel.lab:sel.img).appendChild(o);});
   if(sel.lab.options.length>1){sel.lab.selectedIndex=1;}
   sel.fr.max=Math.max(0,c.frames.length-1);if(+sel.fr.value>c.frames.length-1){sel.fr.value=0;}
   await show();meshes();setFrame();
  }
  (async function(){
   try{
    await nv.attachToCanvas(cv);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    await pick(sel.cs?sel.cs.value:names[0]);
    nv.drawScene();
    root.setAttribute('data-first-draw-ms',String(Math.round(performance.now()-t0)));
    var gl=nv.gl,w=gl.drawingBufferWidth,h=gl.drawingBufferHeight,px=new Uint8Array(w*h*4),lit=0,n=0;
    gl.readPixels(0,0,w,h,gl.RGBA,gl.UNSIGNED_BYTE,px);  // same task as the draw: the buffer is intact
    for(var i=0;i<px.length;i+=4*97){n++;if(px[i]+px[i+1]+px[i+2]>30){lit++;}}
    root.setAttribute('data-lit-share',(lit/Math.max(n,1)).toFixed(3));
    if(root.getAttribute('data-state')!=='message'){root.setAttribute('data-state','drawn');}
   }catch(e){fail('The viewer could not draw: '+e);}
  })();
  sel.img.addEventListener('change',show);sel.lab.addEventListener('change',show);
  sel.op.addEventListener('input',function(){if(nv.volumes.length>1){nv.setOpacity(1,sel.op.value/100);}});
  sel.fr.addEventListener('input',setFrame);
  sel.mesh.addEventListener('change',toggle);sel.lax.addEventListener('change',toggle);
  sel.lay.addEventListener('change',function(){nv.setSliceType(+sel.lay.value);});
  if(sel.cs){sel.cs.addEventListener('change',function(){pick(sel.cs.value);});}
 });
})();
"""


def _fit_frames(volumes: list[tuple[str, np.ndarray, np.ndarray, bool]], frames: list, budget: int
                ) -> tuple[list[dict], list[int]]:
    """Volume entries, every k-th frame kept (k = 1, 2, ...) until their base64 fits `budget`."""
    T = len(frames)
    for k in range(1, max(T, 1) + 1):
        keep = list(range(0, T, k))
        entries = [volume_entry(n, d[..., keep] if d.ndim == 4 else d, a, lab) for n, d, a, lab in volumes]
        if sum(len(e["nifti"]) for e in entries) <= budget or len(keep) <= 1:
            return entries, keep
    return [], []


def subject_case(study, dense_volume, dense_labels: np.ndarray, frames: list[int], method: str,
                 label_meshes: dict | None = None, budget: int = PAGE_BUDGET) -> dict:
    """One subject's viewer case: the input SAX (cropped to the working grid's heart region plus 10 mm),
    the dense reconstruction and its labels (model grid, uint8), the ED/ES surface meshes, and the LAX
    views as planes in their true place. Frames past the page budget are thinned (every k-th)."""
    sax = np.asarray(study.sax.data)
    sax = sax if sax.ndim == 4 else sax[..., None]
    sax = sax[..., list(frames)]
    crop, crop_affine = crop_to_box(sax, study.sax.affine, dense_volume.affine, dense_volume.spatial_shape)
    dense = np.asarray(dense_volume.data)
    dense = dense if dense.ndim == 4 else dense[..., None]
    labels = np.asarray(dense_labels)
    labels = labels if labels.ndim == 4 else labels[..., None]
    meshes = []
    for name, sm in (label_meshes or {}).items():
        colour = LABEL_COLOURS[3] if name.startswith("rv") else LABEL_COLOURS[2] if "epi" in name else LABEL_COLOURS[1]
        meshes.append(mesh_entry(name, sm.mesh.vertices, sm.mesh.faces, colour, 0.35 if "epi" in name else 0.6))
    lax_budget = 0
    lax_entries = []
    for name, view in study.lax.items():
        e = lax_plane_entry(f"LAX {name}", view, frames, study.num_frames)
        lax_entries.append(e)
        lax_budget += case_size(e)
    vols, keep = _fit_frames([("input SAX", crop, crop_affine, False), (f"{method} (dense)", dense,
                                                                         dense_volume.affine, False),
                              (f"{method} labels", labels, dense_volume.affine, True)], frames,
                             budget - lax_budget - sum(case_size(m) for m in meshes))
    for e in lax_entries:
        e["frames"] = [e["frames"][k] for k in keep]
    interval = study.sax.meta.get("frame_interval")
    return {"volumes": vols, "meshes": meshes + lax_entries, "frames": [int(frames[k]) for k in keep],
            "frame_ms": [float(frames[k]) * float(interval) for k in keep] if interval else None}


def subject_viewer(out, study, rec, labels: np.ndarray, frames: list[int], method: str, ed_index: int = 0,
                   smoothing: int = 20) -> str:
    """The viewer fragment of a cohort subject page (see `subject_case`); the surface meshes at ED."""
    try:
        from cardiorecon.meshes import ventricle_meshes

        meshes = {f"{n} ED": m for n, m in ventricle_meshes(np.asarray(labels)[..., ed_index], rec.volume.affine,
                                                           smoothing_iterations=smoothing).items()}
    except Exception:  # noqa: BLE001 - a subject without a mesh still gets its volumes
        meshes = {}
    case = subject_case(study, rec.volume, labels, frames, method, meshes)
    return viewer_html({Path(str(out)).name: case}, title=f"{method} reconstruction with labels")


def outputs_case(folder: Path, method: str) -> dict:
    """A viewer case read back from a cohort subject folder's outputs; a message naming the missing files
    when they were deleted or moved (never a blank viewer)."""
    from cardiorecon.io.nifti import read_nifti

    folder = Path(folder)
    files = [folder / f"recon_{method}.nii.gz", folder / f"seg_{method}.nii.gz"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        return {"message": f"The outputs of {folder.name} are not there any more ({', '.join(missing)} not found in "
                           f"{folder}): they were deleted or moved. Run `cardiorecon cohort` again on this subject to "
                           "make them.", "volumes": [], "frames": []}
    img, lab = read_nifti(files[0]), read_nifti(files[1])
    frames = list(range(img.num_frames))
    vols, keep = _fit_frames([(f"{method} (dense)", np.asarray(img.data), img.affine, False),
                              (f"{method} labels", np.asarray(lab.data), lab.affine, True)], frames, PAGE_BUDGET)
    return {"volumes": vols, "meshes": [], "frames": keep, "frame_ms": None}


__all__ = ["CSP", "PAGE_BUDGET", "crop_to_box", "lax_plane_entry", "mesh_entry", "niivue_js", "niivue_version",
           "outputs_case", "outputs_page", "subject_case", "subject_viewer", "viewer_html", "volume_entry"]


def outputs_page(folder: str | Path, method: str) -> str:
    """A page with the viewer of a cohort subject read back from its outputs (`outputs_case`): a clear
    message on the page when they were deleted or moved."""
    from cardiorecon.report.page import build_page

    folder = Path(folder)
    case = outputs_case(folder, method)
    return build_page(f"cardiorecon: {folder.name}", f"outputs of {method} in {folder}",
                      warning=case.get("message", ""),
                      sections=[{"title": "Viewer", "id": "viewer", "html": viewer_html({folder.name: case})}])


# ----- the evaluation report -----
#: Cases of an evaluation whose volumes the report's viewer embeds (the first ones run).
EVALUATION_CASES = 3


def keep_evaluation(figures: dict, case: str, study, rec, method: str, max_cases: int = EVALUATION_CASES) -> None:
    """Keep (uint8) a method's dense reconstruction of `case` for the evaluation report's viewer, with the
    study it was given (its input SAX and LAX views); only the first `max_cases` cases."""
    kept = figures.setdefault("viewer", {})
    if case not in kept and len(kept) >= max_cases:
        return
    entry = kept.setdefault(case, {"study": study, "frames": list(rec.frames), "methods": {}, "labels": {}})
    entry["methods"][method] = (to_uint8(rec.normalised.data), np.array(rec.normalised.affine))


def keep_evaluation_labels(figures: dict, case: str, frame, method: str, labels: np.ndarray | None,
                           reference: np.ndarray | None = None) -> None:
    """Keep one frame of a method's predicted labels (and the reference labels) for the viewer."""
    entry = figures.get("viewer", {}).get(case)
    if entry is None:
        return
    if labels is not None:
        entry["labels"].setdefault(method, {})[str(frame)] = np.asarray(labels, np.uint8)
    if reference is not None:
        entry["labels"].setdefault("reference", {})[str(frame)] = np.asarray(reference, np.uint8)


def evaluation_viewer_section(figures: dict) -> dict | None:
    """The evaluation report's viewer section: per kept case, the input SAX, every method's reconstruction
    and labels (and the reference labels) in their true place, with the LAX views as planes."""
    kept = figures.get("viewer") or {}
    if not kept:
        return None
    cases = {}
    budget = PAGE_BUDGET // max(len(kept), 1)
    for case, e in kept.items():
        study, frames = e["study"], e["frames"]
        methods = e["methods"]
        if not methods:
            continue
        first = next(iter(methods.values()))
        X, Y, Z = first[0].shape[:3]
        sax = np.asarray(study.sax.data)
        sax = sax if sax.ndim == 4 else sax[..., None]
        crop, crop_affine = crop_to_box(sax[..., [min(t, sax.shape[3] - 1) for t in frames]], study.sax.affine,
                                        first[1], (X, Y, Z))
        vols = [("input SAX", crop, crop_affine, False)]
        vols += [(m, d, a, False) for m, (d, a) in methods.items()]
        for m, per in e["labels"].items():
            if all(str(t) in per for t in frames):
                aff = methods.get(m, first)[1]
                vols.append((f"{m} labels", np.stack([per[str(t)] for t in frames], -1), aff, True))
        lax = [lax_plane_entry(f"LAX {n}", v, frames, study.num_frames) for n, v in study.lax.items()]
        entries, keep = _fit_frames(vols, frames, budget - sum(case_size(x) for x in lax))
        for x in lax:
            x["frames"] = [x["frames"][k] for k in keep]
        interval = study.sax.meta.get("frame_interval")
        cases[case] = {"volumes": entries, "meshes": lax, "frames": [int(frames[k]) for k in keep],
                       "frame_ms": [float(frames[k]) * float(interval) for k in keep] if interval else None}
    if not cases:
        return None
    return {"id": "viewer", "title": "Viewer: the volumes, case by case",
            "html": viewer_html(cases, title="evaluation volumes"),
            "caption": f"The first {len(cases)} case(s): the input short-axis stack, each method's dense "
                       "reconstruction (image menu) and its predicted labels or the reference labels (labels menu) "
                       "in the scanner's coordinates, with the LAX views as planes in the 3D view."}
