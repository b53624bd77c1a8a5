import { describe, expect, it } from 'vitest';
import { maskAddress, maskPhone } from '../../tools/privacy.ts';

describe('maskPhone', () => {
  it('keeps first three and last four', () => {
    expect(maskPhone('13812345678')).toBe('138****5678');
  });

  it('ignores separators and +86', () => {
    expect(maskPhone('+86 138-1234-5678')).toBe('138****5678');
    expect(maskPhone('8613812345678')).toBe('138****5678');
  });

  it('shows less of short numbers', () => {
    expect(maskPhone('1234567')).toBe('****4567');
    expect(maskPhone('12345')).toBe('****');
    expect(maskPhone('1')).toBe('****');
  });

  it('returns empty for no digits', () => {
    expect(maskPhone('')).toBe('');
    expect(maskPhone('unknown')).toBe('');
  });

  it('never returns a number in full', () => {
    const inputs = ['1234', '12345678', '123456789', '1234567890', '13812345678', '021-64381234', '008613812345678'];
    for (const input of inputs) {
      const masked = maskPhone(input);

      expect(masked).toContain('****');
      expect(masked.replace(/\D/g, '')).not.toBe(input.replace(/\D/g, ''));
    }
  });
});

describe('maskAddress', () => {
  it('keeps city and district', () => {
    expect(maskAddress('上海市徐汇区漕溪北路88号2号楼1203室')).toBe('上海市徐汇区****');
    expect(maskAddress('上海市浦东新区张杨路500号')).toBe('上海市浦东新区****');
  });

  it('keeps province, city and district', () => {
    expect(maskAddress('浙江省杭州市西湖区文三路90号')).toBe('浙江省杭州市西湖区****');
    expect(maskAddress('新疆维吾尔自治区乌鲁木齐市天山区解放路')).toBe('新疆维吾尔自治区乌鲁木齐市天山区****');
  });

  it('hides addresses without a region', () => {
    expect(maskAddress('阳光花园小区3号楼')).toBe('****');
    expect(maskAddress('漕溪北路88号')).toBe('****');
    expect(maskAddress('221B Baker Street, London')).toBe('****');
  });

  it('hides an address that is only a region', () => {
    expect(maskAddress('上海市徐汇区')).toBe('****');
    expect(maskAddress('上海市')).toBe('****');
  });

  it('handles empty and tiny input', () => {
    expect(maskAddress('')).toBe('');
    expect(maskAddress('   ')).toBe('');
    expect(maskAddress('A')).toBe('****');
  });

  it('never returns an address in full', () => {
    const inputs = ['上海市徐汇区漕溪北路88号', '北京市朝阳区', '某某路1号', 'Flat 2, 10 Downing St', '华联超市', '徐汇区漕溪北路'];
    for (const input of inputs) {
      const masked = maskAddress(input);

      expect(masked.endsWith('****')).toBe(true);
      expect(masked.replace('****', '')).not.toBe(input);
    }
  });
});
