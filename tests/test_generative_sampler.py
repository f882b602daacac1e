"""The one sampler over the generative families: every image family's tiny config trains a
step, then `python -m train.sample` writes the same samples on 1 and on 8 devices (a PNG
grid and the raw npz); the 'fd' evaluator runs inside the loop. The diffusion U-Net with
guidance (ddpm_digits) is checked on 1 and 8 devices by tests/test_ldm.py (the same
network and sampler over latents), the video families by tests/test_video.py and WaveNet by
tests/test_wavenet.py."""

import os

import numpy as np
import pytest

from conftest import load_config, read_metrics, run_sample

FAMILIES = ['flow_digits.py:tiny', 'flow_digits.py:tiny,model=glow',
            'pixelcnn_digits.py:tiny,conditional', 'nade_digits.py:tiny',
            'nade_digits.py:tiny,model=fvsbn', 'vae_digits.py:tiny', 'vae_digits.py:tiny,model=kl',
            'gan_digits.py:tiny', 'ebm_digits.py:tiny', 'ebm_digits.py:tiny,method=nce',
            'score_digits.py:tiny', 'dit_digits.py:tiny']


def _train(spec, workdir, data_dir, **overrides):
  from train import loop
  config = load_config(spec, data__data_dir=data_dir, total_steps=1, eval_every=1,
                       log_every=1, ckpt_every=1, **overrides)
  return loop.train_and_evaluate(config, str(workdir))


@pytest.mark.parametrize('spec', FAMILIES)
def test_samples_are_the_same_on_one_and_eight_devices(spec, tmp_path, data_dir):
  _train(spec, tmp_path, data_dir)
  arrays = []
  args = ['--config', f'configs/{spec}', '--workdir', tmp_path, '--num_samples', '10',
          '--seed', '3']
  for devices in (1, 8):
    proc = run_sample(args, data_dir, devices=devices)
    assert proc.returncode == 0, proc.stderr
    stem = tmp_path / 'samples' / 'step1_seed3'
    assert os.path.getsize(f'{stem}.png') > 0
    arrays.append(np.load(f'{stem}.npz')['images'])
  one, eight = arrays
  assert one.shape[0] == 10 and one.dtype == np.uint8 and one.ndim == 4
  np.testing.assert_array_equal(one, eight)
  assert len({x.tobytes() for x in one}) > 1  # rows differ: per-row randomness


def test_image_sampler_refuses_a_prompt(tmp_path, data_dir):
  _train('flow_digits.py:tiny', tmp_path, data_dir)
  proc = run_sample(['--config', 'configs/flow_digits.py:tiny', '--workdir', tmp_path,
                     '--prompt', 'a seven'], data_dir)
  assert proc.returncode == 2 and 'takes no prompt' in proc.stderr


def test_fd_is_reported_by_the_loop(tmp_path, data_dir):
  clf = load_config('lenet_digits.py', data__data_dir=data_dir, total_steps=200,
                    eval_every=200, log_every=200, ckpt_every=200)
  from train import loop
  loop.train_and_evaluate(clf, str(tmp_path / 'clf'))
  result = _train('flow_digits.py:tiny', tmp_path / 'run', data_dir,
                  evals__fd__every=0, evals__fd__workdir=tmp_path / 'clf',
                  evals__fd__num_samples=64)
  assert {'fd', 'fd_floor', 'class_coverage', 'bits_per_dim'} <= set(result)
  assert result['fd'] > result['fd_floor'] > 0 and 0 <= result['class_coverage'] <= 1
  assert read_metrics(tmp_path / 'run', 'eval')[1]['fd'] == pytest.approx(result['fd'])


def test_image_grid_places_every_sample():
  from train import sample
  images = np.arange(5 * 2 * 3 * 1, dtype=np.uint8).reshape(5, 2, 3, 1)
  grid = sample.image_grid(images, scale=2, pad=1)
  assert grid.shape == (2 * (4 + 1) + 1, 3 * (6 + 1) + 1, 1)  # 3 columns, 2 rows
  np.testing.assert_array_equal(grid[1:5, 1:7, 0], np.kron(images[0, ..., 0], np.ones((2, 2))))
  np.testing.assert_array_equal(grid[6:10, 8:14, 0], np.kron(images[4, ..., 0], np.ones((2, 2))))
  assert (grid[6:10, 15:21] == 128).all()  # the sixth cell is empty


def test_video_and_audio_outputs(tmp_path):
  import wave
  from PIL import Image
  from train import sample
  rng = np.random.default_rng(0)
  videos = rng.integers(0, 256, (3, 4, 5, 6, 1), dtype=np.uint8)
  print(sample.write_outputs(str(tmp_path / 'v'), {'videos': videos}))
  gif = Image.open(tmp_path / 'v.gif')
  assert gif.n_frames == 4
  grids = sample.video_grids(videos)
  for t in range(4):
    gif.seek(t)
    np.testing.assert_array_equal(np.asarray(gif.convert('L')), grids[t][..., 0])
  strip = np.asarray(Image.open(tmp_path / 'v.png'))
  assert strip.shape[1] > strip.shape[0]  # frames side by side
  np.testing.assert_array_equal(np.load(tmp_path / 'v.npz')['videos'], videos)
  audio = np.sin(np.arange(400) / 5.0).astype(np.float32)[None].repeat(2, 0)
  sample.write_outputs(str(tmp_path / 'a'), {'audio': audio, 'sample_rate': np.full(2, 4000)})
  with wave.open(str(tmp_path / 'a_1.wav')) as f:
    assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (4000, 1, 2)
    pcm = np.frombuffer(f.readframes(f.getnframes()), '<i2')
  np.testing.assert_array_equal(pcm, np.round(audio[1] * 32767).astype(np.int16))
