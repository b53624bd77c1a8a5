/**
 * Masking for the personal data that tool results carry, so agents and their prompts see
 * only as much of a phone number or address as their task needs.
 */

// The hidden part is always four asterisks, so a masked value does not reveal its length.
const hiddenMark = '****';

// Phone numbers shorter than this are masked entirely: keeping the usual seven digits
// would show most or all of them.
const minPhoneDigitsForPrefix = 11;
const minPhoneDigitsForSuffix = 7;

/**
 * Masks a phone number to its first three and last four digits, e.g. '13812345678' becomes
 * '138****5678'. Ignores spaces, dashes and a leading +86. Numbers of 7 to 10 digits keep
 * only the last four, shorter ones are fully hidden, and an input without digits gives ''.
 */
export function maskPhone(phone: string): string {
  let digits = phone.replace(/\D/g, '');
  if (digits.length === 13 && digits.startsWith('86')) {
    digits = digits.slice(2);
  }

  if (digits.length === 0) {
    return '';
  }
  if (digits.length >= minPhoneDigitsForPrefix) {
    return `${digits.slice(0, 3)}${hiddenMark}${digits.slice(-4)}`;
  }
  if (digits.length >= minPhoneDigitsForSuffix) {
    return `${hiddenMark}${digits.slice(-4)}`;
  }
  return hiddenMark;
}

// Matches the administrative prefix of a Chinese address: an optional province or
// autonomous region, an optional city or prefecture, then an optional district, county or
// county-level city. Only Han characters count, so house numbers never match.
const regionPrefix =
  /^(\p{Script=Han}{2,7}?(?:省|自治区))?(\p{Script=Han}{1,9}?(?:市|自治州|地区|盟))?(\p{Script=Han}{1,9}?(?:区|县|旗|市))?/u;

/**
 * Masks an address down to its province, city and district, e.g.
 * '上海市徐汇区漕溪北路88号' becomes '上海市徐汇区****'. Everything is hidden ('****') when
 * the address does not start with a province or city (so '阳光花园小区3号楼' shows no
 * estate name), or when the supposed region is the whole address (so '华联超市' is not taken
 * for a city). An empty address gives ''.
 *
 * NOTE: a place name ending in 市 at the very start, as in '华联超市3楼', is taken for a
 * city and shown. Checking against a list of real cities would close this.
 */
export function maskAddress(address: string): string {
  const trimmed = address.trim();
  if (trimmed.length === 0) {
    return '';
  }

  const match = regionPrefix.exec(trimmed);
  const [region = '', province, city] = match ?? [];
  const startsWithRegion = province !== undefined || city !== undefined;
  if (!startsWithRegion || region.length >= trimmed.length) {
    return hiddenMark;
  }

  return `${region}${hiddenMark}`;
}
