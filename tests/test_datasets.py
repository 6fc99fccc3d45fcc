import gzip
import io
import os
import pickle
import struct
import tarfile

import chainer_vogn  # NOQA: before chainer
import chainer
from chainer.dataset import download
import numpy
import pytest
import scipy.io

from chainer_vogn import datasets
from chainer_vogn import run_options
from chainer_vogn import run_setup


def raw_images(dataset, info):
    """Undoes the standardisation: the [0, 1] pixels of every example."""
    x = numpy.stack([dataset[i][0] for i in range(len(dataset))])
    mean = numpy.array(info['mean'])[:, None, None]
    std = numpy.array(info['std'])[:, None, None]
    return x * std + mean


def labels(dataset):
    return numpy.array([dataset[i][1] for i in range(len(dataset))])


# ---------------------------------------------------------------- CIFAR

# In a CIFAR row the green (c=1) pixel at row 5, column 7 is element
# 1 * 1024 + 5 * 32 + 7.
MARK_INDEX = 1 * 1024 + 5 * 32 + 7


def cifar_batch(n, n_classes, seed):
    rng = numpy.random.RandomState(seed)
    rows = rng.randint(0, 250, size=(n, 3072)).astype(numpy.uint8)
    rows[0, MARK_INDEX] = 255  # the only 255 in the first image
    return rows, [int(c) for c in rng.randint(0, n_classes, size=n)]


def cifar10_batches():
    names = ['data_batch_{}'.format(i) for i in range(1, 6)] + ['test_batch']
    return {name: cifar_batch(3 if name != 'test_batch' else 4, 10, seed)
            for seed, name in enumerate(names)}


def bytes_key_pickle(rows, label_list, label_key=b'labels'):
    return pickle.dumps({b'batch_label': b'fabricated', b'data': rows,
                         label_key: label_list}, protocol=2)


def write_tar(path, folder, members):
    with tarfile.open(path, 'w:gz') as tar:
        for name, data in members.items():
            info = tarfile.TarInfo('{}/{}'.format(folder, name))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_cifar10_tar(directory):
    batches = cifar10_batches()
    members = {name: bytes_key_pickle(*batch)
               for name, batch in batches.items()}
    members['batches.meta'] = pickle.dumps({b'label_names': []})
    path = os.path.join(str(directory), 'cifar-10-python.tar.gz')
    write_tar(path, 'cifar-10-batches-py', members)
    return path, batches


def check_cifar10(train, test, info, batches):
    train_names = ['data_batch_{}'.format(i) for i in range(1, 6)]
    assert info['name'] == 'cifar10'
    assert info['n_classes'] == 10
    assert info['in_channels'] == 3
    assert info['image_size'] == 32
    assert (info['n_train'], info['n_test']) == (15, 4)
    assert (len(train), len(test)) == (15, 4)
    x, t = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == numpy.float32
    assert t.dtype == numpy.int32 and numpy.ndim(t) == 0

    expected_labels = sum((batches[n][1] for n in train_names), [])
    numpy.testing.assert_array_equal(labels(train), expected_labels)
    numpy.testing.assert_array_equal(labels(test), batches['test_batch'][1])

    pixels = numpy.rint(raw_images(train, info) * 255)
    first = pixels[0]
    assert first[1, 5, 7] == 255
    assert (first == 255).sum() == 1
    expected = numpy.concatenate([batches[n][0] for n in train_names])
    numpy.testing.assert_array_equal(
        pixels, expected.reshape(-1, 3, 32, 32))
    test_pixels = numpy.rint(raw_images(test, info) * 255)
    numpy.testing.assert_array_equal(
        test_pixels, batches['test_batch'][0].reshape(-1, 3, 32, 32))


def test_cifar10_archive_with_bytes_keys(tmp_path):
    _, batches = write_cifar10_tar(tmp_path)
    train, test, info = datasets.get_dataset('cifar10', data_dir=str(tmp_path))
    check_cifar10(train, test, info, batches)


def test_cifar10_extracted_folder_with_str_keys(tmp_path):
    batches = cifar10_batches()
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    for name, (rows, label_list) in batches.items():
        with open(str(folder / name), 'wb') as f:
            pickle.dump({'data': rows, 'labels': label_list}, f)
    train, test, info = datasets.get_dataset('cifar10', data_dir=str(tmp_path))
    check_cifar10(train, test, info, batches)


def test_standardised_with_training_statistics(tmp_path):
    write_cifar10_tar(tmp_path)
    train, test, info = datasets.get_dataset('cifar10', data_dir=str(tmp_path))
    x = numpy.stack([train[i][0] for i in range(len(train))])
    numpy.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    numpy.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert all(0.4 < m < 0.6 for m in info['mean'])  # uniform in 0..249


def test_cifar100_fine_labels(tmp_path):
    train_rows, train_fine = cifar_batch(6, 100, 10)
    test_rows, test_fine = cifar_batch(2, 100, 11)
    members = {
        'train': pickle.dumps({b'data': train_rows, b'fine_labels': train_fine,
                               b'coarse_labels': [99] * 6}),
        'test': pickle.dumps({b'data': test_rows, b'fine_labels': test_fine,
                              b'coarse_labels': [99] * 2}),
    }
    write_tar(str(tmp_path / 'cifar-100-python.tar.gz'), 'cifar-100-python',
              members)
    train, test, info = datasets.get_dataset('cifar100',
                                             data_dir=str(tmp_path))
    assert info['n_classes'] == 100
    assert (info['n_train'], info['n_test']) == (6, 2)
    numpy.testing.assert_array_equal(labels(train), train_fine)
    numpy.testing.assert_array_equal(labels(test), test_fine)
    pixels = numpy.rint(raw_images(train, info) * 255)
    assert pixels[0, 1, 5, 7] == 255 and (pixels[0] == 255).sum() == 1


def test_truncated_archive_is_reported(tmp_path):
    path, _ = write_cifar10_tar(tmp_path)
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(ValueError, match='corrupt or truncated') as e:
        datasets.get_dataset('cifar10', data_dir=str(tmp_path))
    assert path in str(e.value)


def test_archive_without_a_batch_is_reported(tmp_path):
    path = str(tmp_path / 'cifar-10-python.tar.gz')
    write_tar(path, 'cifar-10-batches-py',
              {'data_batch_1': bytes_key_pickle(*cifar_batch(2, 10, 0))})
    with pytest.raises(ValueError, match='no member data_batch_2') as e:
        datasets.get_dataset('cifar10', data_dir=str(tmp_path))
    assert path in str(e.value)


def test_missing_cifar_names_every_path(tmp_path):
    data_dir = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError) as e:
        datasets.get_dataset('cifar10', data_dir=data_dir)
    message = str(e.value)
    assert os.path.join(data_dir, 'cifar-10-batches-py') in message
    assert os.path.join(data_dir, 'cifar-10-python.tar.gz') in message
    assert 'https://www.cs.toronto.edu/~kriz/cifar.html' in message


def test_incomplete_extracted_folder_names_the_file(tmp_path):
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    rows, fine = cifar_batch(2, 100, 0)
    with open(str(folder / 'train'), 'wb') as f:
        pickle.dump({'data': rows, 'fine_labels': fine}, f)
    with pytest.raises(FileNotFoundError, match='test is missing') as e:
        datasets.get_dataset('cifar100', data_dir=str(tmp_path))
    assert str(folder / 'test') in str(e.value)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as e:
        datasets.get_dataset('imagenet')
    for name in ('cifar10', 'cifar100', 'svhn', 'mnist', 'digits'):
        assert name in str(e.value)


# ---------------------------------------------------------------- SVHN

def write_svhn(directory, n_train=5, n_test=3):
    rng = numpy.random.RandomState(0)
    arrays = {}
    for split, n in (('train', n_train), ('test', n_test)):
        X = rng.randint(0, 250, size=(32, 32, 3, n)).astype(numpy.uint8)
        X[4, 9, 2, 1] = 255  # blue pixel at row 4, column 9 of image 1
        y = (numpy.arange(n) % 10 + 1).astype(numpy.uint8)[:, None]  # 1..10
        y[-1] = 10
        path = os.path.join(str(directory), '{}_32x32.mat'.format(split))
        scipy.io.savemat(path, {'X': X, 'y': y})
        arrays[split] = (X, y, path)
    return arrays


def test_svhn(tmp_path):
    arrays = write_svhn(tmp_path)
    train, test, info = datasets.get_dataset('svhn', data_dir=str(tmp_path))
    assert (info['n_train'], info['n_test']) == (5, 3)
    assert info['in_channels'] == 3 and info['n_classes'] == 10
    assert train[0][0].shape == (3, 32, 32)
    numpy.testing.assert_array_equal(labels(train), [1, 2, 3, 4, 0])
    numpy.testing.assert_array_equal(labels(test), [1, 2, 0])
    pixels = numpy.rint(raw_images(train, info) * 255)
    assert pixels[1, 2, 4, 9] == 255 and (pixels[1] == 255).sum() == 1
    numpy.testing.assert_array_equal(
        pixels, arrays['train'][0].transpose(3, 2, 0, 1))


def test_svhn_missing_names_both_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        datasets.get_dataset('svhn', data_dir=str(tmp_path))
    assert str(tmp_path / 'train_32x32.mat') in str(e.value)
    assert str(tmp_path / 'test_32x32.mat') in str(e.value)


def test_truncated_svhn_is_reported(tmp_path):
    path = write_svhn(tmp_path)['train'][2]
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(ValueError, match='corrupt or truncated') as e:
        datasets.get_dataset('svhn', data_dir=str(tmp_path))
    assert path in str(e.value)


# ---------------------------------------------------------------- MNIST

def idx_bytes(array):
    header = struct.pack('>I', 0x0800 + array.ndim)
    header += struct.pack('>' + 'I' * array.ndim, *array.shape)
    return header + array.astype(numpy.uint8).tobytes()


def write_mnist(directory, gz=True, n_train=4, n_test=2):
    rng = numpy.random.RandomState(0)
    images = {}
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        x = rng.randint(0, 250, size=(n, 28, 28)).astype(numpy.uint8)
        x[0, 3, 20] = 255
        t = numpy.arange(n, dtype=numpy.uint8) + 3
        images[prefix] = (x, t)
        for kind, array in (('images-idx3', x), ('labels-idx1', t)):
            name = '{}-{}-ubyte'.format(prefix, kind)
            path = os.path.join(str(directory), name)
            # The test files are written plain: both forms must be read.
            if gz and prefix == 'train':
                with gzip.open(path + '.gz', 'wb') as f:
                    f.write(idx_bytes(array))
            else:
                with open(path, 'wb') as f:
                    f.write(idx_bytes(array))
    return images


def check_mnist(train, test, info, images):
    assert info['in_channels'] == 1 and info['image_size'] == 28
    assert (info['n_train'], info['n_test']) == (4, 2)
    assert train[0][0].shape == (1, 28, 28)
    assert train[0][0].dtype == numpy.float32
    numpy.testing.assert_array_equal(labels(train), [3, 4, 5, 6])
    numpy.testing.assert_array_equal(labels(test), [3, 4])
    pixels = numpy.rint(raw_images(train, info) * 255)
    assert pixels[0, 0, 3, 20] == 255 and (pixels[0] == 255).sum() == 1
    numpy.testing.assert_array_equal(pixels[:, 0], images['train'][0])
    test_pixels = numpy.rint(raw_images(test, info) * 255)
    numpy.testing.assert_array_equal(test_pixels[:, 0], images['t10k'][0])


@pytest.fixture
def empty_chainer_cache(tmp_path, monkeypatch):
    root = tmp_path / 'chainer-root'
    monkeypatch.setattr(download, '_dataset_root', str(root))
    return root


def test_mnist_idx_files(tmp_path, empty_chainer_cache):
    images = write_mnist(tmp_path)
    train, test, info = datasets.get_dataset('mnist', data_dir=str(tmp_path))
    check_mnist(train, test, info, images)


def write_npz_cache(root, images):
    cache = root / 'pfnet' / 'chainer' / 'mnist'
    cache.mkdir(parents=True)
    for prefix, name in (('train', 'train.npz'), ('t10k', 'test.npz')):
        x, t = images[prefix]
        numpy.savez_compressed(str(cache / name), x=x.reshape(len(x), -1),
                               y=t)


def test_mnist_from_chainer_cache(tmp_path, empty_chainer_cache):
    (tmp_path / 'source').mkdir()
    images = write_mnist(tmp_path / 'source')
    write_npz_cache(empty_chainer_cache, images)
    train, test, info = datasets.get_dataset(
        'mnist', data_dir=str(tmp_path / 'empty'))
    check_mnist(train, test, info, images)


def test_mnist_missing_does_not_download(tmp_path, empty_chainer_cache,
                                         monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError('get_mnist called without allow_download')

    monkeypatch.setattr(chainer.datasets, 'get_mnist', no_download)
    with pytest.raises(FileNotFoundError) as e:
        datasets.get_dataset('mnist', data_dir=str(tmp_path))
    message = str(e.value)
    assert str(tmp_path / 'train-images-idx3-ubyte.gz') in message
    assert str(tmp_path / 't10k-labels-idx1-ubyte') in message
    cache = empty_chainer_cache / 'pfnet' / 'chainer' / 'mnist'
    assert str(cache / 'train.npz') in message
    assert 'allow_download' in message
    assert not empty_chainer_cache.exists()  # nothing created either


def test_mnist_missing_names_the_callers_way_to_download(
        tmp_path, empty_chainer_cache):
    """train.py's message names its option; evaluate.py, which has none,
    names no way to download."""
    with pytest.raises(FileNotFoundError) as e:
        datasets.get_dataset('mnist', data_dir=str(tmp_path),
                             download_hint='--allow-download')
    assert '(--allow-download)' in str(e.value)
    assert 'allow_download' not in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        run_setup.load_data(run_options.RunConfig(dataset='mnist',
                                                  data_dir=str(tmp_path)))
    assert 'download them' not in str(e.value)
    assert 'allow' not in str(e.value) and '--data-dir' in str(e.value)


def test_mnist_download_goes_through_chainer(tmp_path, empty_chainer_cache,
                                             monkeypatch):
    (tmp_path / 'source').mkdir()
    images = write_mnist(tmp_path / 'source')
    calls = []

    def fake_get_mnist(**kwargs):
        calls.append(kwargs)
        write_npz_cache(empty_chainer_cache, images)

    monkeypatch.setattr(chainer.datasets, 'get_mnist', fake_get_mnist)
    train, test, info = datasets.get_dataset(
        'mnist', data_dir=str(tmp_path / 'empty'), allow_download=True)
    assert len(calls) == 1
    check_mnist(train, test, info, images)


def test_truncated_mnist_is_reported(tmp_path, empty_chainer_cache):
    write_mnist(tmp_path)
    path = str(tmp_path / 'train-images-idx3-ubyte.gz')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(ValueError, match='corrupt or truncated') as e:
        datasets.get_dataset('mnist', data_dir=str(tmp_path))
    assert path in str(e.value)


# ---------------------------------------------------------------- digits

def test_digits_offline_stratified_and_deterministic():
    train, test, info = datasets.get_dataset('digits')
    assert info['n_train'] + info['n_test'] == 1797
    assert (len(train), len(test)) == (info['n_train'], info['n_test'])
    assert info['n_classes'] == 10 and info['in_channels'] == 1
    assert info['image_size'] == 8
    assert train[0][0].shape == (1, 8, 8)
    assert abs(info['n_test'] - 0.2 * 1797) < 1

    t_train, t_test = labels(train), labels(test)
    per_class = numpy.bincount(numpy.concatenate([t_train, t_test]))
    assert len(per_class) == 10
    numpy.testing.assert_allclose(numpy.bincount(t_test, minlength=10),
                                  0.2 * per_class, atol=1)

    pixels = raw_images(train, info) * 16
    numpy.testing.assert_allclose(pixels, numpy.rint(pixels), atol=1e-4)
    assert abs(pixels.min()) < 1e-4 and abs(pixels.max() - 16) < 1e-4

    train2, test2, info2 = datasets.get_dataset('digits')
    assert info2 == info
    numpy.testing.assert_array_equal(labels(train2), t_train)
    numpy.testing.assert_array_equal(train2[17][0], train[17][0])
    numpy.testing.assert_array_equal(test2[5][0], test[5][0])


def test_image_size_repeats_pixels():
    train, _, info = datasets.get_dataset('digits')
    big, _, big_info = datasets.get_dataset('digits', image_size=32)
    assert big_info['image_size'] == 32
    assert big_info['mean'] == info['mean'] and big_info['std'] == info['std']
    x, y = train[3][0], big[3][0]
    assert y.shape == (1, 32, 32)
    for i in range(8):
        for j in range(8):
            block = y[0, 4 * i:4 * i + 4, 4 * j:4 * j + 4]
            assert (block == x[0, i, j]).all()


@pytest.mark.parametrize('size', [13, 4, 8.5])
def test_image_size_must_be_a_multiple_or_an_even_border(size):
    with pytest.raises(ValueError, match='multiple of 8 or 8 plus an even'):
        datasets.get_dataset('digits', image_size=size)


def test_image_size_pads_a_black_border(tmp_path, empty_chainer_cache):
    """28x28 to 32x32: the image in the middle, a 2-pixel border that is a
    black (raw 0) pixel after standardisation, statistics unchanged."""
    images = write_mnist(tmp_path)
    train, test, info = datasets.get_dataset('mnist', data_dir=str(tmp_path))
    big, big_test, big_info = datasets.get_dataset(
        'mnist', data_dir=str(tmp_path), image_size=32)
    assert big_info['image_size'] == 32 and big_info['mean'] == info['mean']
    x = big[1][0]
    assert x.shape == (1, 32, 32)
    numpy.testing.assert_array_equal(x[:, 2:30, 2:30], train[1][0])
    raw = x * big_info['std'][0] + big_info['mean'][0]
    border = numpy.ones((32, 32), bool)
    border[2:30, 2:30] = False
    numpy.testing.assert_allclose(raw[0][border], 0, atol=1e-6)
    numpy.testing.assert_array_equal(big_test[0][0][:, 2:30, 2:30],
                                     test[0][0])
    assert images['train'][0][1].max() > 0  # the middle is not all black


def test_fashion_mnist_reads_idx_files_in_its_folder(tmp_path,
                                                     empty_chainer_cache):
    (tmp_path / "fashion-mnist").mkdir()
    images = write_mnist(tmp_path / "fashion-mnist")
    train, test, info = datasets.get_dataset('fashion-mnist',
                                             data_dir=str(tmp_path))
    check_mnist(train, test, info, images)
    assert info['name'] == 'fashion-mnist'


def test_fashion_mnist_missing_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        datasets.get_dataset('fashion-mnist', data_dir=str(tmp_path))
    assert 'train-images-idx3-ubyte' in str(err.value)
    assert 'fashion-mnist' in str(err.value)


# ---------------------------------------------------------------- classes

@pytest.mark.parametrize('text,expected', [
    ('5-9', [5, 6, 7, 8, 9]),
    ('0,2,4', [0, 2, 4]),
    ('0-2,7', [0, 1, 2, 7]),
    ('3', [3]),
])
def test_parse_class_range(text, expected):
    assert datasets.parse_class_range(text) == expected


@pytest.mark.parametrize('text', ['', '9-5', 'a', '1,,2', '-1', '1-2-3',
                                  '1,1', '0-3,2'])
def test_parse_class_range_rejects(text):
    with pytest.raises(ValueError):
        datasets.parse_class_range(text)


def test_select_classes():
    x = numpy.arange(10 * 2 * 2, dtype=numpy.float32).reshape(10, 1, 2, 2)
    t = numpy.array([0, 5, 1, 9, 5, 2, 7, 0, 6, 8], dtype=numpy.int32)
    dataset = chainer.datasets.TupleDataset(x, t)
    held_out = datasets.select_classes(dataset, [5, 6, 7, 8, 9])
    assert len(held_out) == 6
    numpy.testing.assert_array_equal(labels(held_out), [5, 9, 5, 7, 6, 8])
    numpy.testing.assert_array_equal(held_out[1][0], x[3])

    relabelled = datasets.select_classes(dataset, [9, 5], relabel=True)
    numpy.testing.assert_array_equal(labels(relabelled), [1, 0, 1])
    assert relabelled[0][1].dtype == numpy.int32
    numpy.testing.assert_array_equal(relabelled[1][0], x[3])

    with pytest.raises(ValueError):
        datasets.select_classes(dataset, [3, 4])
    with pytest.raises(ValueError):
        datasets.select_classes(dataset, [])


# ---------------------------------------------------------------- augmentation

def test_random_crop_flip_is_a_shifted_window():
    image = numpy.random.RandomState(0).rand(3, 8, 8).astype(numpy.float32)
    padded = numpy.pad(image, ((0, 0), (2, 2), (2, 2)))
    transform = datasets.RandomCropFlip(pad=2, seed=1)
    seen = set()
    for _ in range(1000):
        out, t = transform((image, 7))
        assert out.shape == image.shape and out.dtype == image.dtype
        assert t == 7
        matches = [(top, left, flip)
                   for top in range(5) for left in range(5)
                   for flip in (False, True)
                   if numpy.array_equal(
                       out, padded[:, top:top + 8, left:left + 8][
                           :, :, ::-1 if flip else 1])]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 50  # every offset and both orientations occur


def test_random_crop_flip_reproducible_and_flips_half():
    image = numpy.random.RandomState(0).rand(1, 6, 6).astype(numpy.float32)
    a = datasets.RandomCropFlip(pad=0, seed=3)
    b = datasets.RandomCropFlip(pad=0, seed=3)
    c = datasets.RandomCropFlip(pad=0, seed=4)
    outs_a = [a((image, 0))[0] for _ in range(1000)]
    outs_b = [b((image, 0))[0] for _ in range(1000)]
    outs_c = [c((image, 0))[0] for _ in range(1000)]
    flips_a = [not numpy.array_equal(o, image) for o in outs_a]
    flips_b = [not numpy.array_equal(o, image) for o in outs_b]
    flips_c = [not numpy.array_equal(o, image) for o in outs_c]
    assert flips_a == flips_b
    assert flips_a != flips_c
    assert 430 < sum(flips_a) < 570
    for o, flipped in zip(outs_a, flips_a):
        if flipped:
            numpy.testing.assert_array_equal(o, image[:, :, ::-1])



# ---------------------------------------------------------------- study sets

def uneven_labels(seed=0):
    """2000 shuffled labels of 6 classes with unequal counts (one class of
    7: its share of a small subset is a fraction of one)."""
    counts = [800, 500, 400, 193, 100, 7]
    t = numpy.repeat(numpy.arange(len(counts)), counts).astype(numpy.int32)
    return numpy.random.RandomState(seed).permutation(t), numpy.array(counts)


@pytest.mark.parametrize('size', [1, 13, 150, 999, 1999, 2000])
def test_stratified_indices_keep_each_class_share(size):
    t, counts = uneven_labels()
    index = datasets.stratified_indices(t, size,
                                        numpy.random.RandomState(3))
    assert len(index) == size
    assert len(numpy.unique(index)) == size
    numpy.testing.assert_array_equal(index, numpy.sort(index))
    assert index.min() >= 0 and index.max() < len(t)
    taken = numpy.bincount(t[index], minlength=len(counts))
    share = size * counts / counts.sum()
    # Largest remainder: each class gets its share rounded down or up.
    assert numpy.all(numpy.abs(taken - share) < 1), (taken, share)
    assert numpy.all(taken <= counts)


def test_stratified_indices_fixed_per_seed():
    t, _ = uneven_labels()

    def draw(seed):
        return datasets.stratified_indices(t, 300,
                                           numpy.random.RandomState(seed))
    numpy.testing.assert_array_equal(draw(5), draw(5))
    assert not numpy.array_equal(draw(5), draw(6))
    # Every example of a class can be drawn: over seeds the subsets of the
    # 7-example class (one example in each) visit all of them.
    rare = numpy.flatnonzero(t == 5)
    seen = set()
    for seed in range(60):
        seen.update(numpy.intersect1d(draw(seed), rare).tolist())
    assert seen == set(rare.tolist())


def test_subset_takes_the_examples_as_copies():
    x = numpy.arange(6 * 2, dtype=numpy.float32).reshape(6, 1, 2)
    t = numpy.array([3, 1, 4, 1, 5, 9], dtype=numpy.int32)
    part = datasets.subset(chainer.datasets.TupleDataset(x, t), [1, 4, 5])
    assert len(part) == 3
    numpy.testing.assert_array_equal(labels(part), [1, 5, 9])
    numpy.testing.assert_array_equal(part[1][0], x[4])
    numpy.testing.assert_array_equal(datasets.labels_of(part), [1, 5, 9])
    assert datasets.labels_of(part).dtype == numpy.int32
    part._datasets[0][:] = -1
    assert x.min() == 0  # the original is untouched


def test_flip_labels_changes_exactly_the_reported_labels():
    t = numpy.random.RandomState(1).randint(0, 10, size=1001).astype(
        numpy.int32)
    before = t.copy()
    noisy, flipped = datasets.flip_labels(t, 0.3, 10,
                                          numpy.random.RandomState(2))
    numpy.testing.assert_array_equal(t, before)  # the input is untouched
    assert len(flipped) == round(0.3 * 1001) == 300
    assert len(numpy.unique(flipped)) == len(flipped)
    numpy.testing.assert_array_equal(flipped, numpy.sort(flipped))
    numpy.testing.assert_array_equal(numpy.flatnonzero(noisy != t), flipped)
    assert noisy.dtype == numpy.int32
    assert noisy.min() >= 0 and noisy.max() < 10


@pytest.mark.parametrize('n, fraction, expected', [
    (7, 0.3, 2), (10, 0.25, 2), (10, 0.0, 0), (5, 0.99, 5), (1, 0.4, 0)])
def test_flip_labels_count_is_the_rounded_fraction(n, fraction, expected):
    t = numpy.zeros(n, dtype=numpy.int32)
    noisy, flipped = datasets.flip_labels(t, fraction, 3,
                                          numpy.random.RandomState(0))
    assert len(flipped) == expected
    assert numpy.count_nonzero(noisy) == expected


def test_flip_labels_fixed_per_seed():
    t = numpy.random.RandomState(1).randint(0, 10, size=500)

    def flip(seed):
        return datasets.flip_labels(t, 0.2, 10,
                                    numpy.random.RandomState(seed))
    (a, fa), (b, fb), (c, fc) = flip(4), flip(4), flip(5)
    numpy.testing.assert_array_equal(a, b)
    numpy.testing.assert_array_equal(fa, fb)
    assert not numpy.array_equal(fa, fc)
    assert not numpy.array_equal(a, c)


def test_flip_targets_are_uniform_over_the_other_classes():
    """On 200,000 labels: which labels flip does not depend on the class
    or the position, and a flipped label of class i goes to each j != i
    equally often (chi-square tests at p = 1e-4 on a fixed seed)."""
    from scipy import stats
    k, n = 10, 200000
    t = numpy.random.RandomState(7).randint(0, k, size=n).astype(numpy.int32)
    noisy, flipped = datasets.flip_labels(t, 0.4, k,
                                          numpy.random.RandomState(8))
    assert len(flipped) == 80000
    old, new = t[flipped], noisy[flipped]
    assert numpy.all(old != new)
    table = numpy.zeros((k, k))
    numpy.add.at(table, (old, new), 1)
    assert numpy.all(numpy.diag(table) == 0)
    off = ~numpy.eye(k, dtype=bool)
    expected = (table.sum(axis=1, keepdims=True) / (k - 1)).repeat(k, 1)
    chi2 = ((table - expected)[off] ** 2 / expected[off]).sum()
    assert stats.chi2.sf(chi2, k * (k - 2)) > 1e-4, table
    # Flips per class: 40 % of each class's labels.
    rate = numpy.bincount(old, minlength=k) / numpy.bincount(t, minlength=k)
    numpy.testing.assert_allclose(rate, 0.4, atol=0.015)
    # Flips per tenth of the array: no part is favoured.
    per_part = numpy.bincount(flipped * 10 // n, minlength=10)
    chi2 = ((per_part - 8000.0) ** 2 / 8000.0).sum()
    assert stats.chi2.sf(chi2, 9) > 1e-4, per_part


def test_flip_labels_of_two_classes_swaps_them():
    t = numpy.array([0, 1] * 50, dtype=numpy.int32)
    noisy, flipped = datasets.flip_labels(t, 0.5, 2,
                                          numpy.random.RandomState(0))
    numpy.testing.assert_array_equal(noisy[flipped], 1 - t[flipped])
